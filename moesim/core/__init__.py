"""The pure analytic core: routing, placement, traffic and cost functions (numpy only)."""
