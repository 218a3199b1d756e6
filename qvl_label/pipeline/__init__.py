"""From paths to records: loading images, ordering, duplicates, and the batch run."""
