"""Stage 2, workflow -> lock: workflow analysis (`analyze`), what each node pack provides (`nodemap`), the
Python lock (`pylock`), importers of other formats, version operations (`versions`), the lock pipeline
(`pipeline`: `comfyver lock`) and `check`. May import `base` and `sources`."""
