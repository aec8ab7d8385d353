"""The pretraining data pipeline, taught in notebook 01, one module per step.

=============  ==========================================  =====================
module         what it does                                notebook 01 section
=============  ==========================================  =====================
``crawl``      stream WARC records, detect charsets        1. Crawl
``extract``    main text from HTML; score vs ground truth  2. Text extraction
``dedup``      exact, MinHash, LSH, datasketch             3. Deduplication
``quality``    Gopher/C4 rules, fastText-style classifier  4. Quality filtering
``mix``        source shares, mixing weights               5. Data mix
``pipeline``   every step in order -> the cleaned corpus   6. The whole pipeline
=============  ==========================================  =====================
"""
from . import crawl, dedup, extract, mix, pipeline, quality

__all__ = ["crawl", "extract", "dedup", "quality", "mix", "pipeline"]
