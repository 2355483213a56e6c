"""vaebench pipeline: everything that touches files, params and the command line."""
