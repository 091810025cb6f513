"""Quality filters: each check returns ``None`` (keep) or a reason; the caller keeps and counts every reject."""
