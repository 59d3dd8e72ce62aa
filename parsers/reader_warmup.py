"""Loaded by the parser pool's forkserver: what every reader needs, made once for all of them.

A reader is forked from the forkserver and inherits what it holds. Building the spaCy pipeline
with jieba's dictionary takes about 1.2 s of CPU; made in each reader on its first unlabelled
field, it was paid again by every reader, and by every replacement of one that a hostile file
stopped. A failure here only costs that time again in each reader (which builds what it lacks),
never the forkserver itself.
"""

import logging

log = logging.getLogger(__name__)

try:
    from parsers.docx_reader import load_word_library
    from parsers.nlp import pipeline

    load_word_library()
    pipeline()
except Exception as exc:  # the forkserver must start whatever happens here
    log.warning("the parser processes could not be prepared ahead (each prepares itself): %s", exc)
