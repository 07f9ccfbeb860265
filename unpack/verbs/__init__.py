"""The verbs the CLI offers; each is a plain function the CLI calls."""
