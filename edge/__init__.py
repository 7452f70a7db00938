"""edge-inspect edge runtime: OpenVINO inference, decisions and the PLC link, without torch.

Shared numeric code that the host also needs (pre-processing, NFA) lives here and the host
imports it from here, never the reverse.
"""

__version__ = "0.1.0"
