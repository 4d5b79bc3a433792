"""Export: saved-model artifacts (HF layout + tunelab metadata), written and read in one place."""
