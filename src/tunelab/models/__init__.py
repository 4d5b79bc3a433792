"""Models: every model and tokenizer load, models tunelab builds itself, and the saved-model format.

``load`` (pretrained dirs, shipped assets, plain HF classes), ``architectures`` (tunelab's own model
classes), ``scratch`` (tokenizers and random inits built from a corpus), ``adapter`` / ``int8`` /
``artifact`` (the saved-model variants, written and read together), ``run_info`` (the typed
``tunelab_run.json``), ``manifest`` (the hashes of what a run read, recorded in it). Nothing else
in tunelab calls ``from_pretrained``.
"""
