"""Export: checkpoint -> decoder graph + generation graphs -> package directory."""
