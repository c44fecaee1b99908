-- Llama-3.2-3B-Instruct (Meta, Llama 3.2 Community License; a gated repository: fetching it
-- needs an accepted licence and a Hugging Face token in git's credential helper).
-- The commit is the revision public projects pin for this model (found by searching published
-- code, not checked against the hub from the machine this was written on: `qbake build`
-- refuses it if the repository does not hold it).
-- The importance matrix is computed on a Q8_0 of the baseline: much cheaper than the F16
-- forward pass at 3 B parameters, and nearly as good.
release "Llama-3.2-3B-Instruct" {
  model    = git { url    = "https://huggingface.co/meta-llama/Llama-3.2-3B-Instruct",
                   commit = "0cb88a4f764b7a12671c53f0838cd831a0843b95" },
  baseline = "bf16",
  corpora  = {
    calib = text { "../examples/corpora/calib.txt" },
    eval  = text { "../examples/corpora/eval.txt" },
  },
  imatrix  = { corpus = "calib", ctx = 512, chunks = 64, from = "Q8_0" },
  tiers    = { "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", { "Q4_K_S", output_tensor_type = "Q6_K" }, "IQ4_XS" },
  eval     = { corpus = "eval", ctx = 512, chunks = 32 },
  gates    = {
    ["*"]  = { max_ppl_increase = "3%", max_kld = 0.05 },
    Q4_K_S = { max_ppl_increase = "5%", fallback = "Q4_K_M" },
  },
}
