"""What every job needs and no algorithm knows: errors and exit statuses, settings from TOML and flags, the command
plumbing, the cluster connection, progress, task outcomes, storage locations, staged outputs, crash-safe
checkpoints and tree reductions. ``core`` imports nothing from the other rooms."""
