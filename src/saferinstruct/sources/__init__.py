"""Raw safety corpora in, clean categorised source texts out: readers, one loader per format, clean-up, ingest."""
