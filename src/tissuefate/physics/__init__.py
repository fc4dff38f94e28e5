"""One module per physical or biological process. Physics never imports I/O or the CLI."""
