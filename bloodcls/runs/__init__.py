"""Run folders: what they hold, status, resume, and the environment a result records."""
