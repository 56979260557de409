"""Research workflow around the model: results files, the demo, and (later) grids and reports."""
