"""Pictures: dataset grids and pixel shares (`msccl data browse`), confusion matrices and per-class IoU
(after every validate / test), learning curves and embedding diagnostics (`msccl plot`).

The figures draw with matplotlib (the `plots` extra), imported only by these modules, so training and
inference never load it unless a figure is being made; prediction overlays (`overlay.py`, NumPy) and
their legend (`legend.py`, OpenCV) draw without it.
"""
