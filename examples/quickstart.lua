-- quickstart.lua - the whole pipeline on the small model bundled in examples/pydoc-tiny
-- (2 layers, 2 M parameters): convert to F16, compute an importance matrix on the
-- calibration text, build three tiers, evaluate each against the baseline on held-out text.
-- Paths are relative to this file. Text: Python 3.11 documentation (PSF licence);
-- corpora/calib.txt is from its whatsnew/ pages, corpora/eval.txt from faq/ - disjoint.
release "pydoc-tiny" {
  model    = hf { path = "pydoc-tiny" },
  baseline = "f16",
  corpora  = {
    calib = text { "corpora/calib.txt" },
    eval  = text { "corpora/eval.txt" },
  },
  imatrix  = { corpus = "calib", ctx = 256, chunks = 16 },
  tiers    = { "Q8_0", "Q4_K_M", "IQ4_XS" },
  eval     = { corpus = "eval", ctx = 256, chunks = 16, prompts = "corpora/prompts.txt" },
}
