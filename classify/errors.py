"""The one exception type that the classify commands turn into a one-sentence message."""


class ClassifyError(ValueError):
    """Bad input for fitting or predicting: the message says what, which file, and what to do."""


class HeadError(ClassifyError):
    """A head file that is missing, damaged, or does not match the features it is given."""
