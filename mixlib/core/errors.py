"""Errors that a job turns into one line on stderr and an exit status.

``InputError`` means the user can fix it (a bad file, flag, config value or address): exit status 2.
``JobFailed`` means the job could not finish for a reason the message explains: exit status 1.
``Refused`` means the job finished its work but refused to publish it (a guardrail): exit status 3.
``SomeInputsFailed`` means a batch wrote what it could and some inputs failed (its report lists them): exit status 4.
Anything else is unexpected and also exits 1.
"""


class JobError(Exception):
    """An outcome a job reports in one line with its own exit status (``exit_status``)."""

    exit_status = 1


class InputError(JobError):
    """A problem with the job's inputs, options or configuration (exit status 2)."""

    exit_status = 2


class JobFailed(JobError):
    """The job started but could not finish; the message says what to change (exit status 1)."""

    exit_status = 1


class Refused(JobError):
    """The job refused to publish its result; the message says why (exit status 3)."""

    exit_status = 3


class SomeInputsFailed(JobError):
    """A batch ended with some of its inputs failed, each recorded with its reason (exit status 4)."""

    exit_status = 4
