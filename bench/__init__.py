"""`make bench`: ingest, segmenter and end-to-end figures measured on an isolated stack of their own."""
