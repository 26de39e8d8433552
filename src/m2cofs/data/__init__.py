"""Finding, checking, loading and preprocessing multi-modal MRI cases."""
