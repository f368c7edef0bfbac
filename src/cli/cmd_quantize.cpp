// `megamoe quantize`: a BF16/FP32 checkpoint -> its routed experts in NVFP4
// (ModelOpt's layout, input_scale calibrated on text), MXFP4 or FP8 block-128
// (DeepSeek's layouts); --dense-fp8 also stores the attention projections and
// shared expert as FP8 block-128. runtime/quantize_checkpoint.hpp has the rules.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/model_config.hpp"
#include "runtime/quantize_checkpoint.hpp"
#include "runtime/token_ids.hpp"
#include "text/tokenizer.hpp"

namespace {

// Calibration windows of `window` tokens, each starting with BOS (as the
// model's prompts do), at most `count` of them.
std::vector<std::vector<int32_t>> calibration_windows(const std::vector<int32_t>& ids, int64_t bos, int64_t window,
                                                      int64_t count) {
  std::vector<std::vector<int32_t>> out;
  const int64_t body = bos >= 0 ? window - 1 : window;
  for (size_t begin = 0; begin < ids.size() && static_cast<int64_t>(out.size()) < count; begin += body) {
    std::vector<int32_t> w;
    if (bos >= 0) w.push_back(static_cast<int32_t>(bos));
    w.insert(w.end(), ids.begin() + begin, ids.begin() + std::min(ids.size(), begin + body));
    out.push_back(std::move(w));
  }
  return out;
}

int run_quantize(int argc, char** argv) {
  CLI::App app{"quantize a BF16/FP32 checkpoint's routed experts to NVFP4, MXFP4 or FP8", argv[0]};
  std::string in_dir, out_dir, format = "nvfp4", calib_text, calib_ids, tokenizer_path, device = "cpu";
  std::string window_text = "256", windows_text = "16";
  bool dense_fp8 = false, quiet = false;
  app.add_option("--in", in_dir, "source checkpoint directory (BF16/FP32 experts)")->required();
  app.add_option("--out", out_dir, "output directory (created; must not hold a checkpoint)")->required();
  app.add_option("--format", format, "nvfp4 (ModelOpt), mxfp4 or fp8 (DeepSeek's layouts)");
  app.add_flag("--dense-fp8", dense_fp8, "also store attention projections and the shared expert as FP8 block-128");
  CLI::Option* text_opt = app.add_option("--calib-text", calib_text, "nvfp4: calibrate input_scale on this UTF-8 text");
  CLI::Option* ids_opt = app.add_option("--calib-ids", calib_ids, "nvfp4: calibrate on these token ids (a file)");
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json for --calib-text (default: the one in --in)");
  app.add_option("--calib-window", window_text, "tokens per calibration window, BOS included (default 256)");
  app.add_option("--calib-windows", windows_text, "at most this many windows (default 16)");
  app.add_option("--device", device, "where calibration runs: cpu (default), cuda or auto");
  app.add_flag("--quiet", quiet, "no progress on stderr");
  CLI11_PARSE(app, argc, argv);

  megamoe::QuantizeOptions options;
  options.format = megamoe::parse_quantize_format(format);
  options.dense_fp8 = dense_fp8;
  options.calibration_device = megamoe::parse_device_kind(device);
  if (!quiet) options.progress = [](const std::string& line) { std::fprintf(stderr, "quantize: %s\n", line.c_str()); };
  MEGAMOE_CHECK(text_opt->count() + ids_opt->count() <= 1, "give --calib-text or --calib-ids, not both");
  if (text_opt->count() + ids_opt->count() == 1) {
    MEGAMOE_CHECK(options.format == megamoe::QuantizeFormat::kNvfp4,
                  "--calib-text / --calib-ids calibrate NVFP4 input_scale; --format ", format, " has none");
    const int64_t window = megamoe::cli::parse_int_option("--calib-window", window_text, 2, 65536);
    const int64_t count = megamoe::cli::parse_int_option("--calib-windows", windows_text, 1, 1 << 20);
    const auto config = megamoe::load_model_config((std::filesystem::path(in_dir) / "config.json").string());
    std::vector<int32_t> ids;
    if (ids_opt->count()) {
      ids = megamoe::read_token_ids_file(calib_ids);
    } else {
      const std::string path =
          tokenizer_path.empty() ? (std::filesystem::path(in_dir) / "tokenizer.json").string() : tokenizer_path;
      const megamoe::text::Tokenizer tokenizer = megamoe::text::Tokenizer::from_file(path);
      ids = tokenizer.encode(megamoe::read_input(calib_text, megamoe::text::Tokenizer::kDefaultMaxInputBytes));
      MEGAMOE_CHECK(!ids.empty(), calib_text, ": no text to calibrate on");
    }
    for (size_t t = 0; t < ids.size(); ++t) {
      MEGAMOE_CHECK(ids[t] >= 0 && ids[t] < config.vocab_size, "calibration token id ", ids[t], " at index ", t,
                    " is outside the vocabulary [0, ", config.vocab_size, ") of ", in_dir);
    }
    options.calibration = calibration_windows(ids, config.bos_token_id, window, count);
  } else {
    MEGAMOE_CHECK(tokenizer_path.empty(), "--tokenizer is only used with --calib-text");
  }
  const megamoe::QuantizeSummary s = megamoe::quantize_checkpoint(in_dir, out_dir, options);
  std::printf("wrote %s: %lld expert matrices as %s%s, %lld dense projections as fp8; %.1f MB -> %.1f MB of tensors%s\n",
              out_dir.c_str(), static_cast<long long>(s.experts), format.c_str(),
              options.calibration.empty() ? "" : " (input_scale calibrated)", static_cast<long long>(s.dense),
              static_cast<double>(s.bytes_in) / 1e6, static_cast<double>(s.bytes_out) / 1e6,
              options.format == megamoe::QuantizeFormat::kNvfp4 && options.calibration.empty()
                  ? "; no input_scale (W4A16 form: give --calib-text for W4A4)"
                  : "");
  return 0;
}

const megamoe::cli::Registration kQuantize{"quantize", "quantize a checkpoint's experts to NVFP4 / MXFP4 / FP8",
                                           run_quantize};

}  // namespace
