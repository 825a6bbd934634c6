"""Version of the avatar features the renderer consumes (``export.deform_fields``).

Its own torch-free module so the server, the avatar loader and model manifests can compare
versions without importing the feature code or torch.  Bump it whenever the meaning, shape or
set of any feature in ``features.npz`` changes: prepared avatars with another version are
re-prepared (the built-in one) or refused with a message saying to prepare them again.
"""

FEATURES_VERSION = 1
