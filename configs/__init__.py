"""Each job's default settings (TOML), shipped inside the package as ``mixlib.configs``: ``--config NAME``."""
