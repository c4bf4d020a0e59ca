"""Stage 0, the base every stage stands on: errors, the project and its caches' folders, the lock format
(`lockfile`, its JSON Schema), atomic file writes, HTTP (`web`: sessions, tokens, redaction), the NAR
serializer, the uv binary, terminal output. Imports nothing from comfyver outside `base`."""
