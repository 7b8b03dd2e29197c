class BadInputError(ValueError):
    """A user-supplied choice or value is invalid; the message is shown to the user as is."""
