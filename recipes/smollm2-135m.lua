-- SmolLM2-135M (Hugging Face, Apache-2.0): Llama architecture, 30 layers, tied embeddings.
-- The commit pins the checkpoint; it is the revision public projects pin for this model
-- (found by searching published code, not checked against the hub from the machine this was
-- written on: `qbake build` refuses it if the repository does not hold it).
-- The corpora are the small samples bundled with the examples; a real release would
-- calibrate on a larger, representative text.
release "SmolLM2-135M" {
  model    = git { url    = "https://huggingface.co/HuggingFaceTB/SmolLM2-135M",
                   commit = "93efa2f097d58c2a74874c7e644dbc9b0cee75a2" },
  baseline = "bf16",
  corpora  = {
    calib = text { "../examples/corpora/calib.txt" },
    eval  = text { "../examples/corpora/eval.txt" },
  },
  imatrix  = { corpus = "calib", ctx = 512, chunks = 64 },
  tiers    = { "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS" },
  eval     = { corpus = "eval", ctx = 512, chunks = 32 },
  gates    = {
    ["*"]  = { max_ppl_increase = "5%" },
    IQ4_XS = { max_ppl_increase = "8%", fallback = "Q5_K_M" },
  },
}
