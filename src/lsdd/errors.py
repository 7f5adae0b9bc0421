"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (a wrong name, a malformed file, a mismatched checkpoint)."""


class ScoreContractError(UserError):
    """A score function broke the contract (wrong shape, NaN or infinite scores)."""
