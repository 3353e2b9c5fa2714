"""The fraud scoring API: the promoted model over HTTP."""
