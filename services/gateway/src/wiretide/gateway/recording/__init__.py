"""Traffic recording: jobs (scheduled and triggered), bundles, uploads and `record("name")`."""
