"""Architecture patterns, one module per family, over a shared GraphView (graph/view.py) in which
decomposed operators have been fused (fusion.py).
"""
