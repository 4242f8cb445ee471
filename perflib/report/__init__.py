"""The weekly report: its data, summary, tables, plots and the rendering of the notebook."""
