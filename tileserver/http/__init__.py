"""HTTP fronts: app factory, error table, one module per front."""
