"""Scripts: finding and loading them, and the job context handed to ``main(job)``."""
