"""Reading sources into the batch engine and writing results out."""
