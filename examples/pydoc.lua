-- pydoc.lua - the shared 8 M-parameter fixture (../shared/fixtures/pydoc-8m beside the
-- clone), with the settings of the golden llama.cpp runs in ../shared/golden: imatrix and
-- perplexity at ctx 256 over 64 chunks, so qbake's figures can be compared with them.
release "pydoc-8m" {
  model    = hf { path = "../../shared/fixtures/pydoc-8m" },
  baseline = "bf16",
  corpora  = {
    calib = text { "../../shared/fixtures/corpora/calib.txt" },
    eval  = text { "../../shared/fixtures/corpora/eval.txt" },
  },
  imatrix  = { corpus = "calib", ctx = 256, chunks = 64 },
  tiers    = { "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS" },
  eval     = { corpus = "eval", ctx = 256, chunks = 64,
               prompts = "../../shared/fixtures/corpora/prompts.txt" },
  gates    = {
    ["*"]  = { max_ppl_increase = "1%", max_kld = 0.01 },
    IQ4_XS = { max_kld = 0.002, min_same_top = "95%", fallback = "Q5_K_M" },
  },
}
