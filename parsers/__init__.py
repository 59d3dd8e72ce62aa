"""Turn the bytes of a submission email into the fields of a call's form.

``read_message`` reads one message in process and never raises; ``parsers.sandbox.ParserPool``
runs it in worker processes with memory and time limits, for mail from strangers.
"""

from parsers.documents import read_document
from parsers.limits import Limits
from parsers.message import extract_parts, read_message

__all__ = ["Limits", "extract_parts", "read_document", "read_message"]
