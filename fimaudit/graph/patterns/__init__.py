"""Architecture patterns, one module per family, over a shared GraphView (graph/view.py).

In that view, decomposed operators have been fused (fusion.py).
"""
