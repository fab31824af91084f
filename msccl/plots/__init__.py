"""Pictures: dataset grids and pixel shares (`msccl data browse`), confusion matrices and per-class IoU
(after every validate / test), learning curves and embedding diagnostics (`msccl plot`).

Everything here draws with matplotlib (the `plots` extra), imported only by these modules, so training
and inference never load it unless a picture is being made.
"""
