"""Image side: loading (paths, URLs, bytes; typed errors), the exact / fast / SigLIP2 image processors, and
threaded decode batches shared by the pipeline, the CLI and bulk jobs."""
