"""Study wing: the variant catalogue, study files, run specs and keys, and the dry-run plan."""
