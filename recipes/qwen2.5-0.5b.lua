-- Qwen2.5-0.5B (Qwen, Apache-2.0): Qwen2 architecture (q/k/v biases), 24 layers, tied embeddings.
-- The commit is the revision public projects pin for this model (found by searching published
-- code, not checked against the hub from the machine this was written on: `qbake build`
-- refuses it if the repository does not hold it).
release "Qwen2.5-0.5B" {
  model    = git { url    = "https://huggingface.co/Qwen/Qwen2.5-0.5B",
                   commit = "060db6499f32faf8b98477b0a26969ef7d8b9987" },
  baseline = "bf16",
  corpora  = {
    calib = text { "../examples/corpora/calib.txt" },
    eval  = text { "../examples/corpora/eval.txt" },
  },
  imatrix  = { corpus = "calib", ctx = 512, chunks = 64 },
  tiers    = { "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_NL", "IQ4_XS" },
  eval     = { corpus = "eval", ctx = 512, chunks = 32 },
  gates    = {
    ["*"]  = { max_ppl_increase = "5%", min_same_top = "85%" },
  },
}
