"""Adapters that plug flashmarkov's operators into other libraries.

``flashmarkov.integrations.transformers`` registers ``attn_implementation="flashmarkov"`` with
Hugging Face transformers (importing it needs transformers; this package itself does not).
"""
