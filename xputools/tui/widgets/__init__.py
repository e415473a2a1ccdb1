"""The TUI's widgets, one module each; they only format what the headless cores return."""
