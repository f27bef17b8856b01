// word2vec's sparse SGD steps as XLA:CPU custom calls (issue #20): CBOW's
// (translearn_jax.models.word2vec._cbow_step), skip-gram's with shared negatives
// (_skipgram_step) and skip-gram's with per-pair negatives taken one context offset at a time
// (_sequential_pair_step), each with negative_share=1; the sequential step also under the
// curvature cap (optim.row_cap, row_cap_mode='curvature'), the others with no row cap.
//
// Each computes the same update as the XLA program: every score and error from the tables
// as the step found them, then the rows' updates, each row's in the order XLA's scatter adds
// them (output rows: the block's own tokens' first, then the negatives'). What differs from the XLA
// program is how memory is read: the step is bound by the latency of random rows of two
// vocabulary-sized tables, so the next position's rows are prefetched while the current
// one is scored. Dot products sum in 16 lanes (a different float order from XLA's).
// Built at first use by translearn_jax/kernels/cpu.py; the tables are updated in place
// (the custom call aliases them to its results).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TRANSLEARN_RELAX() _mm_pause()
#else
#define TRANSLEARN_RELAX() std::this_thread::yield()
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;

inline float Dot(const float* a, const float* b, int64_t n) {
  float lane[kLanes] = {0.0f};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t k = 0; k < kLanes; ++k) lane[k] += a[d + k] * b[d + k];
  float s = 0.0f;
  for (int64_t k = 0; k < kLanes; ++k) s += lane[k];
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

inline void Prefetch(const float* row, int64_t n, bool write) {
  for (int64_t d = 0; d < n; d += 16) {
    if (write) __builtin_prefetch(row + d, 1);
    else __builtin_prefetch(row + d, 0);
  }
}

// σ(x) from e = e^-|x| (no overflow for any x); the loss terms are
// log(1 + e^x) = max(x, 0) + log(1 + e) and log(1 + e^-x) = max(-x, 0) + log(1 + e)
inline float SigmoidFrom(float x, float e) { return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e); }

// Σ log(1 + e_i) as the log of a product, one logarithm for many terms (each factor is in
// (1, 2], so 32 of them stay below 2^32)
struct LogSum {
  float product = 1.0f, sum = 0.0f;
  int n = 0;
  void Add(float e) {
    product *= 1.0f + e;
    if (++n == 32) Flush();
  }
  void Flush() { sum += std::log(product); product = 1.0f; n = 0; }
  float Total() { Flush(); return sum; }
};

// A second thread for a call's parts. Between calls it spins for kSpin (a scanned step's
// calls come a few hundred microseconds apart, and waking a sleeping thread costs about that
// on a VM), then sleeps until the next job. A job is taken at most once: by the helper, or
// revoked by the caller (Finish) when the helper has not taken it by the time the caller has
// run out of parts, so a helper that the OS has descheduled (the input thread shares the
// cores) costs the caller no wait. One helper a process (a new one after fork); a call that
// finds it busy runs all its parts itself.
class Helper {
 public:
  static Helper* Get() {
    static std::mutex make_mu;
    static Helper* helper = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> l(make_mu);
    if (helper == nullptr || owner != getpid()) {   // never freed: it outlives every call
      const char* env = std::getenv("TRANSLEARN_KERNEL_THREADS");
      if ((env != nullptr && std::atoi(env) == 1) || std::thread::hardware_concurrency() < 2)
        return nullptr;
      helper = new Helper();
      owner = getpid();
    }
    return helper;
  }
  std::mutex& call_mu() { return call_mu_; }
  void Post(const std::function<void()>* job) {
    job_ = job;
    done_.store(false, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> l(mu_);
      posted_.store(true, std::memory_order_release);
    }
    cv_.notify_one();
  }
  // Revokes the job if the helper has not taken it, else waits until it has run it.
  void Finish() {
    bool posted = true;
    if (posted_.compare_exchange_strong(posted, false, std::memory_order_acq_rel)) return;
    while (!done_.load(std::memory_order_acquire)) TRANSLEARN_RELAX();
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(500);
  Helper() { std::thread([this] { Loop(); }).detach(); }
  void Loop() {
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      while (!posted_.load(std::memory_order_acquire)) {
        if (std::chrono::steady_clock::now() - start > kSpin) {
          std::unique_lock<std::mutex> l(mu_);
          cv_.wait(l, [this] { return posted_.load(std::memory_order_acquire); });
          break;
        }
        TRANSLEARN_RELAX();
      }
      bool posted = true;     // take the job, unless the caller revoked it first
      if (!posted_.compare_exchange_strong(posted, false, std::memory_order_acq_rel)) continue;
      (*job_)();
      done_.store(true, std::memory_order_release);
    }
  }
  std::mutex call_mu_, mu_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  std::atomic<bool> posted_{false}, done_{true};
};

// Runs part(0), ..., part(n - 1), each once, on this thread and on the helper when it is
// free: the two claim the parts in order from one counter, so a late helper leaves its
// parts to this thread. A part computes the same whichever thread runs it, so a call gives
// the same bits on one thread or two.
void Parts(int n, const std::function<void(int)>& part) {
  Helper* helper = Helper::Get();
  std::unique_lock<std::mutex> lock;
  if (helper != nullptr) lock = std::unique_lock<std::mutex>(helper->call_mu(), std::try_to_lock);
  std::atomic<int> next{0};
  const std::function<void()> claim = [&] {
    for (int i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed))
      part(i);
  };
  if (!lock.owns_lock()) {
    claim();
    return;
  }
  helper->Post(&claim);
  claim();
  helper->Finish();
}

// A step's scoring is cut into this many runs of positions, claimed by the two threads in
// turn (each its own loss sums, added in run order whichever thread took it).
constexpr int kScoreParts = 8;

float Sum(const float (&parts)[kScoreParts]) {
  float s = 0.0f;
  for (float x : parts) s += x;
  return s;
}

// A step's working arrays, kept from call to call on each calling thread: allocating and
// zeroing them afresh each step (a few hundred KiB) cost more than reusing them. Every
// element a step reads it has written first.
float* Scratch(int slot, int64_t n) {
  thread_local std::vector<float> buffers[4];
  std::vector<float>& b = buffers[slot];
  if (int64_t(b.size()) < n) b.resize(n);
  return b.data();
}

// Per-row sums over a sub-step (the curvature cap's), kept all zero between uses: a user
// resets the entries it added to. New entries come zeroed.
float* Zeroed(int slot, int64_t n) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& b = buffers[slot];
  if (int64_t(b.size()) < n) b.resize(n, 0.0f);
  return b.data();
}

// min(1, cap / total), `total` a row's summed step curvature (models.word2vec.curvature_scale)
inline float CapScale(float total, float cap) {
  return std::fmin(1.0f, cap / std::fmax(total, std::numeric_limits<float>::min()));
}

// What both steps read: shapes, the tables (updated in place), the batch, the offsets.
struct Step {
  int64_t V = 0, D = 0, B = 0, L = 0, M = 0, N = 0, W = 0, O = 0;
  float* in = nullptr;
  float* out = nullptr;
  const int32_t *tok = nullptr, *seg = nullptr, *win = nullptr, *neg = nullptr;
  float lr = 0.0f, draw_weight = 0.0f;
  std::vector<int64_t> offs;
  std::vector<uint8_t> mask;   // (N, 2W): pair (p, p + offs[j]) is valid

  // fills position p's mask (valid: both tokens real, one segment, |o| <= its window) and
  // returns its count
  int Mask(int64_t p) {
    const int64_t b = p / L, i = p % L;
    const int32_t s = seg[p];
    int count = 0;
    for (int64_t j = 0; j < O; ++j) {
      const int64_t o = offs[j], q = i + o;
      const bool valid = s >= 0 && q >= 0 && q < L && seg[b * L + q] == s &&
                         (o < 0 ? -o : o) <= win[p];
      mask[p * O + j] = valid;
      count += valid;
    }
    return count;
  }
};

ffi::Error Prepare(const char* name, ffi::Buffer<ffi::F32>& in_table,
                   ffi::Buffer<ffi::F32>& out_table, ffi::Buffer<ffi::S32>& tokens,
                   ffi::Buffer<ffi::S32>& segment, ffi::Buffer<ffi::S32>& window_b,
                   ffi::Buffer<ffi::S32>& negatives_b, ffi::Buffer<ffi::F32>& lr_b,
                   int64_t window, int64_t negatives, ffi::ResultBuffer<ffi::F32>& in_new,
                   ffi::ResultBuffer<ffi::F32>& out_new, Step* st) {
  const auto tdims = in_table.dimensions();
  const auto bdims = tokens.dimensions();
  const auto ndims = negatives_b.dimensions();
  const auto odims = out_table.dimensions();
  if (tdims.size() != 2 || odims.size() != 2 || odims[0] != tdims[0] || odims[1] != tdims[1] ||
      bdims.size() != 2 ||
      ndims.size() != 3 || ndims[0] != bdims[0] || ndims[1] != bdims[1])
    return ffi::Error::InvalidArgument(
        std::string(name) +
        ": two tables of one shape (V, D), tokens/segment/window (B, L), negatives (B, L, M)");
  Step& s = *st;
  s.V = tdims[0], s.D = tdims[1], s.B = bdims[0], s.L = bdims[1], s.M = ndims[2];
  s.N = s.B * s.L, s.W = window, s.O = 2 * window;
  s.in = in_new->typed_data();
  s.out = out_new->typed_data();
  if (s.in != in_table.typed_data())
    std::memcpy(s.in, in_table.typed_data(), sizeof(float) * s.V * s.D);
  if (s.out != out_table.typed_data())
    std::memcpy(s.out, out_table.typed_data(), sizeof(float) * s.V * s.D);
  s.tok = tokens.typed_data();
  s.seg = segment.typed_data();
  s.win = window_b.typed_data();
  s.neg = negatives_b.typed_data();
  for (int64_t p = 0; p < s.N; ++p) {
    bool bad = s.tok[p] < 0 || s.tok[p] >= s.V;
    for (int64_t m = 0; m < s.M; ++m) bad |= s.neg[p * s.M + m] < 0 || s.neg[p * s.M + m] >= s.V;
    if (bad)
      return ffi::Error::InvalidArgument(std::string(name) +
                                         ": a token or negative id at batch position " +
                                         std::to_string(p) + " is outside the " +
                                         std::to_string(s.V) + "-row tables");
  }
  s.lr = lr_b.typed_data()[0];
  s.draw_weight = static_cast<float>(double(negatives) / double(s.M));
  for (int64_t o = -s.W; o <= s.W; ++o)
    if (o != 0) s.offs.push_back(o);
  s.mask.assign(s.N * s.O, 0);
  return ffi::Error::Success();
}

// Each position p's row of `table` (its token's), in position order, takes
// -lr · Σ weight(q, j) · src[q] over the centers q = p - offs[j] whose valid pair at offset j
// it was the context of: CBOW's input rows (h's error, weight 1) and the shared draws' output
// rows (the score's error times the center's row).
template <typename Weight>
void AddServed(const Step& st, float* table, const float* src, Weight weight) {
  const int64_t B = st.B, L = st.L, N = st.N, D = st.D, O = st.O;
  std::vector<float> acc(D);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < L; ++i) {
      const int64_t p = b * L + i;
      if (p + 1 < N) Prefetch(table + int64_t(st.tok[p + 1]) * D, D, true);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < O; ++j) {
        const int64_t q = i - st.offs[j];
        if (q < 0 || q >= L || !st.mask[(b * L + q) * O + j]) continue;
        const float w = weight(b * L + q, j);
        const float* e = &src[(b * L + q) * D];
        for (int64_t d = 0; d < D; ++d) acc[d] += w * e[d];
      }
      float* row = table + int64_t(st.tok[p]) * D;
      for (int64_t d = 0; d < D; ++d) row[d] += -st.lr * acc[d];
    }
  }
}

// The output table's updates from a step's negatives, in position order: draw m of position
// p adds -lr · g_n[p, m] · h[p] (CBOW's and the shared draws' last pass)
void AddNegatives(const Step& st, const float* h, const float* g_n) {
  const int64_t N = st.N, M = st.M, D = st.D;
  for (int64_t p = 0; p < N; ++p) {
    const float* hp = &h[p * D];
    for (int64_t m = 0; m < M; ++m) {
      if (p + 1 < N) Prefetch(st.out + int64_t(st.neg[(p + 1) * M + m]) * D, D, true);
      float* row = st.out + int64_t(st.neg[p * M + m]) * D;
      const float g = g_n[p * M + m];
      for (int64_t d = 0; d < D; ++d) row[d] += -st.lr * (g * hp[d]);
    }
  }
}

ffi::Error CbowStepImpl(ffi::Buffer<ffi::F32> in_table, ffi::Buffer<ffi::F32> out_table,
                        ffi::Buffer<ffi::S32> tokens, ffi::Buffer<ffi::S32> segment,
                        ffi::Buffer<ffi::S32> window_b, ffi::Buffer<ffi::S32> negatives_b,
                        ffi::Buffer<ffi::F32> lr_b, int64_t window, int64_t negatives,
                        float max_score, bool skip_target, float row_cap, float /*row_cap_cross*/,
                        ffi::ResultBuffer<ffi::F32> in_new, ffi::ResultBuffer<ffi::F32> out_new,
                        ffi::ResultBuffer<ffi::F32> loss_out,
                        ffi::ResultBuffer<ffi::F32> pairs_out) {
  if (row_cap > 0.0f) return ffi::Error::InvalidArgument("cbow_step: no row cap");
  Step st;
  if (ffi::Error e = Prepare("cbow_step", in_table, out_table, tokens, segment, window_b,
                             negatives_b, lr_b, window, negatives, in_new, out_new, &st);
      e.failure())
    return e;
  const int64_t D = st.D, M = st.M, N = st.N, W = st.W, O = st.O;
  float* in = st.in;
  float* out = st.out;
  const int32_t *tok = st.tok, *neg = st.neg;
  const float lr = st.lr, draw_weight = st.draw_weight;
  const std::vector<int64_t>& offs = st.offs;
  const std::vector<uint8_t>& mask = st.mask;
  float* h = Scratch(0, N * D);
  float* dh = Scratch(1, N * D);
  float* g_c = Scratch(2, N);
  float* g_n = Scratch(3, N * M);

  // 1. scores and errors, every row read from the tables as the step found them; runs of
  // positions on two threads (each run its own loss sums, added in run order)
  float loss_c[kScoreParts] = {}, loss_n[kScoreParts] = {}, pairs[kScoreParts] = {};
  auto score = [&](int part) {
    const int64_t p0 = N * part / kScoreParts, p1 = N * (part + 1) / kScoreParts;
    float part_loss_c = 0.0f, part_loss_n = 0.0f, part_pairs = 0.0f;   // no shared lines
    for (int64_t p = p0; p < p1; ++p) {
      if (p + 1 < p1) {  // the next position's new rows: its center, negatives, last context
        Prefetch(out + int64_t(tok[p + 1]) * D, D, false);
        for (int64_t m = 0; m < M; ++m) Prefetch(out + int64_t(neg[(p + 1) * M + m]) * D, D, false);
        if (p + 1 + W < N) Prefetch(in + int64_t(tok[p + 1 + W]) * D, D, false);
      }
      const int count = st.Mask(p);
      const float has = count > 0 ? 1.0f : 0.0f;
      part_pairs += has;
      const float mean_w = 1.0f / float(count > 0 ? count : 1);
      float* hp = &h[p * D];
      std::fill(hp, hp + D, 0.0f);
      for (int64_t j = 0; j < O; ++j) {
        if (!mask[p * O + j]) continue;
        const float* row = in + int64_t(tok[p + offs[j]]) * D;
        for (int64_t d = 0; d < D; ++d) hp[d] += mean_w * row[d];
      }
      const float* c = out + int64_t(tok[p]) * D;
      const float sc = Dot(hp, c, D);
      const bool live_c = !(max_score > 0.0f) || std::fabs(sc) < max_score;
      const float ec = std::exp(-std::fabs(sc));
      const float gc = live_c ? has * (SigmoidFrom(sc, ec) - 1.0f) : 0.0f;
      g_c[p] = gc;
      part_loss_c += has * (std::fmax(-sc, 0.0f) + std::log1p(ec));
      float* dhp = &dh[p * D];
      for (int64_t d = 0; d < D; ++d) dhp[d] = gc * c[d];
      // every scored negative weighs w = draw_weight · has (0 when skipped)
      LogSum tails;
      float linear = 0.0f;
      for (int64_t m = 0; m < M; ++m) {
        const int32_t id = neg[p * M + m];
        const float* n = out + int64_t(id) * D;
        const float sn = Dot(hp, n, D);
        const bool skipped = skip_target && id == tok[p];
        const float w = skipped ? 0.0f : draw_weight * has;
        const bool live_n = !(max_score > 0.0f) || std::fabs(sn) < max_score;
        const float en = std::exp(-std::fabs(sn));
        const float g = live_n ? w * SigmoidFrom(sn, en) : 0.0f;
        g_n[p * M + m] = g;
        if (!skipped) {
          tails.Add(en);
          linear += std::fmax(sn, 0.0f);
        }
        for (int64_t d = 0; d < D; ++d) dhp[d] += g * n[d];
      }
      part_loss_n += draw_weight * has * (linear + tails.Total());
    }
    loss_c[part] = part_loss_c, loss_n[part] = part_loss_n, pairs[part] = part_pairs;
  };
  Parts(kScoreParts, score);
  // 2. each context row takes the full error of every center it served (word2vec), and
  // 3. the output rows take the centers' errors, then the negatives'. The two passes write
  // different tables and read only the scratch arrays, so they run on two threads at once,
  // each table's rows updated in the same order as on one thread.
  auto update = [&](int part) {
    if (part == 0) {
      AddServed(st, in, dh, [](int64_t, int64_t) { return 1.0f; });
      return;
    }
    for (int64_t p = 0; p < N; ++p) {
      if (p + 1 < N) Prefetch(out + int64_t(tok[p + 1]) * D, D, true);
      float* row = out + int64_t(tok[p]) * D;
      const float a = -lr * g_c[p];
      const float* hp = &h[p * D];
      for (int64_t d = 0; d < D; ++d) row[d] += a * hp[d];
    }
    AddNegatives(st, h, g_n);
  };
  Parts(2, update);
  loss_out->typed_data()[0] = Sum(loss_c) + Sum(loss_n);
  pairs_out->typed_data()[0] = Sum(pairs);
  return ffi::Error::Success();
}


// Skip-gram with shared negatives: center p's input row scores its valid context words'
// output rows (label 1) and its M drawn rows, each weighted draw_weight · (its pairs whose
// context word it is not, with skip_target; else all c_p pairs).
ffi::Error SkipgramStepImpl(ffi::Buffer<ffi::F32> in_table, ffi::Buffer<ffi::F32> out_table,
                            ffi::Buffer<ffi::S32> tokens, ffi::Buffer<ffi::S32> segment,
                            ffi::Buffer<ffi::S32> window_b, ffi::Buffer<ffi::S32> negatives_b,
                            ffi::Buffer<ffi::F32> lr_b, int64_t window, int64_t negatives,
                            float max_score, bool skip_target, float row_cap,
                            float /*row_cap_cross*/, ffi::ResultBuffer<ffi::F32> in_new,
                            ffi::ResultBuffer<ffi::F32> out_new,
                            ffi::ResultBuffer<ffi::F32> loss_out,
                            ffi::ResultBuffer<ffi::F32> pairs_out) {
  if (row_cap > 0.0f) return ffi::Error::InvalidArgument("skipgram_step: no row cap");
  Step st;
  if (ffi::Error e = Prepare("skipgram_step", in_table, out_table, tokens, segment, window_b,
                             negatives_b, lr_b, window, negatives, in_new, out_new, &st);
      e.failure())
    return e;
  const int64_t D = st.D, M = st.M, N = st.N, W = st.W, O = st.O;
  float* in = st.in;
  float* out = st.out;
  const int32_t *tok = st.tok, *neg = st.neg;
  const float lr = st.lr, draw_weight = st.draw_weight;
  const std::vector<int64_t>& offs = st.offs;
  const std::vector<uint8_t>& mask = st.mask;
  float* h = Scratch(0, N * D);
  float* dh = Scratch(1, N * D);
  float* g_c = Scratch(2, N * O);
  float* g_n = Scratch(3, N * M);

  // 1. scores and errors from the tables as the step found them, runs of positions on two
  // threads
  float losses[kScoreParts] = {}, pairs[kScoreParts] = {};
  auto score = [&](int part) {
    const int64_t p0 = N * part / kScoreParts, p1 = N * (part + 1) / kScoreParts;
    float part_loss = 0.0f, part_pairs = 0.0f;
    std::vector<float> w(M);
    for (int64_t p = p0; p < p1; ++p) {
      if (p + 1 < p1) {  // the next position's new rows: its center, negatives, last context
        Prefetch(in + int64_t(tok[p + 1]) * D, D, false);
        for (int64_t m = 0; m < M; ++m) Prefetch(out + int64_t(neg[(p + 1) * M + m]) * D, D, false);
        if (p + 1 + W < N) Prefetch(out + int64_t(tok[p + 1 + W]) * D, D, false);
      }
      const int count = st.Mask(p);
      part_pairs += float(count);
      float* hp = &h[p * D];   // a copy: the input table is written while pass 2 reads it
      std::memcpy(hp, in + int64_t(tok[p]) * D, sizeof(float) * D);
      float* dhp = &dh[p * D];
      std::fill(dhp, dhp + D, 0.0f);
      LogSum tails;
      float linear = 0.0f;
      for (int64_t j = 0; j < O; ++j) {
        if (!mask[p * O + j]) {
          g_c[p * O + j] = 0.0f;
          continue;
        }
        const float* c = out + int64_t(tok[p + offs[j]]) * D;
        const float sc = Dot(hp, c, D);
        const bool live = !(max_score > 0.0f) || std::fabs(sc) < max_score;
        const float e = std::exp(-std::fabs(sc));
        const float g = live ? SigmoidFrom(sc, e) - 1.0f : 0.0f;
        g_c[p * O + j] = g;
        tails.Add(e);
        linear += std::fmax(-sc, 0.0f);
        for (int64_t d = 0; d < D; ++d) dhp[d] += g * c[d];
      }
      float loss = linear + tails.Total();
      for (int64_t m = 0; m < M; ++m) {
        const int32_t id = neg[p * M + m];
        int pairs_m = count;
        if (skip_target) {
          pairs_m = 0;
          for (int64_t j = 0; j < O; ++j) pairs_m += mask[p * O + j] && tok[p + offs[j]] != id;
        }
        w[m] = draw_weight * float(pairs_m);
      }
      LogSum neg_tails;
      float neg_linear = 0.0f;
      for (int64_t m = 0; m < M; ++m) {
        const float* n = out + int64_t(neg[p * M + m]) * D;
        const float sn = Dot(hp, n, D);
        const bool live = !(max_score > 0.0f) || std::fabs(sn) < max_score;
        const float e = std::exp(-std::fabs(sn));
        const float g = live ? w[m] * SigmoidFrom(sn, e) : 0.0f;
        g_n[p * M + m] = g;
        if (skip_target) {
          loss += w[m] * (std::fmax(sn, 0.0f) + std::log1p(e));
        } else {
          neg_tails.Add(e);
          neg_linear += std::fmax(sn, 0.0f);
        }
        for (int64_t d = 0; d < D; ++d) dhp[d] += g * n[d];
      }
      if (!skip_target) loss += draw_weight * float(count) * (neg_linear + neg_tails.Total());
      part_loss += loss;
    }
    losses[part] = part_loss, pairs[part] = part_pairs;
  };
  Parts(kScoreParts, score);
  // 2. the output rows, against the input rows as the step found them (h): token t's row
  // as the context of the centers t - o, then the negatives'; and the input rows. The two
  // write different tables, so they run on two threads at once, each table's rows in the
  // order one thread takes.
  auto update = [&](int part) {
    if (part == 0) {
      for (int64_t p = 0; p < N; ++p) {
        if (p + 1 < N) Prefetch(in + int64_t(tok[p + 1]) * D, D, true);
        float* row = in + int64_t(tok[p]) * D;
        const float* e = &dh[p * D];
        for (int64_t d = 0; d < D; ++d) row[d] += -lr * e[d];
      }
      return;
    }
    AddServed(st, out, h, [&](int64_t q, int64_t j) { return g_c[q * O + j]; });
    AddNegatives(st, h, g_n);
  };
  Parts(2, update);
  loss_out->typed_data()[0] = Sum(losses);
  pairs_out->typed_data()[0] = Sum(pairs);
  return ffi::Error::Success();
}

// Skip-gram with per-pair negatives, one context offset at a time (_sequential_pair_step):
// for offset j, every center p scores its pair (p, p + offs[j]) when it is valid, and that
// pair's K draws neg[p, j·K:(j+1)·K], against the tables as the earlier offsets left them;
// then the sub-step's updates are added (the context rows, then the draws, in position order,
// and the input rows) before the next offset is scored. Pairs outside a center's window are
// skipped, so a step reads and writes only its valid pairs' rows.
//
// With row_cap > 0 (the curvature cap, models.word2vec.apply_rows), each sub-step first sums
// every row's step curvature over the sub-step's scores, lr·Σ σ'(s)·|x|² plus the cross
// term lr·row_cap_cross·Σ |σ(s) − label|, and scales the row's update by
// min(1, row_cap / sum).
ffi::Error SkipgramSequentialStepImpl(ffi::Buffer<ffi::F32> in_table,
                                      ffi::Buffer<ffi::F32> out_table,
                                      ffi::Buffer<ffi::S32> tokens, ffi::Buffer<ffi::S32> segment,
                                      ffi::Buffer<ffi::S32> window_b,
                                      ffi::Buffer<ffi::S32> negatives_b,
                                      ffi::Buffer<ffi::F32> lr_b, int64_t window,
                                      int64_t negatives, float max_score, bool skip_target,
                                      float row_cap, float row_cap_cross,
                                      ffi::ResultBuffer<ffi::F32> in_new,
                                      ffi::ResultBuffer<ffi::F32> out_new,
                                      ffi::ResultBuffer<ffi::F32> loss_out,
                                      ffi::ResultBuffer<ffi::F32> pairs_out) {
  Step st;
  if (ffi::Error e = Prepare("skipgram_sequential_step", in_table, out_table, tokens, segment,
                             window_b, negatives_b, lr_b, window, negatives, in_new, out_new,
                             &st);
      e.failure())
    return e;
  const int64_t D = st.D, M = st.M, N = st.N, O = st.O, K = negatives;
  if (K < 1 || M != O * K)
    return ffi::Error::InvalidArgument(
        "skipgram_sequential_step: negatives must be (B, L, 2·window·K) for K = " +
        std::to_string(K) + ", got " + std::to_string(M) + " a position");
  float* in = st.in;
  float* out = st.out;
  const int32_t *tok = st.tok, *neg = st.neg;
  const float lr = st.lr;
  const std::vector<int64_t>& offs = st.offs;
  const std::vector<uint8_t>& mask = st.mask;
  float total_pairs = 0.0f;
  for (int64_t p = 0; p < N; ++p) total_pairs += float(st.Mask(p));
  float* dh = Scratch(1, N * D);
  float* g_c = Scratch(2, N);
  float* g_n = Scratch(3, N * K);
  const float kx = lr * row_cap_cross;
  float* cur_in = row_cap > 0.0f ? Zeroed(0, st.V) : nullptr;   // a sub-step's curvature
  float* cur_out = row_cap > 0.0f ? Zeroed(1, st.V) : nullptr;  // per row
  float loss = 0.0f;
  // compiled twice: without the cap the sums and scales compile away (no cost to the default)
  const auto run = [&](auto capped_type) {
    constexpr bool capped = decltype(capped_type)::value;
    const auto scale = [&](const float* cur, int32_t id) {
      if constexpr (capped) return CapScale(cur[id], row_cap);
      else return 1.0f;
    };
    for (int64_t j = 0; j < O; ++j) {
      const int64_t o = offs[j];
      const auto valid = [&](int64_t p) { return mask[p * O + j] != 0; };
      const auto draws = [&](int64_t p) { return neg + p * M + j * K; };
      // 1. this offset's scores and errors, from the tables as the earlier offsets left them
      // (on this thread: the sub-steps are short and each reads rows the last one wrote, so a
      // second thread reading them cost more than it saved, 1202 against 959 us a step)
      for (int64_t p = 0; p < N; ++p) {
        if (p + 1 < N && valid(p + 1)) {   // the next pair's rows
          Prefetch(in + int64_t(tok[p + 1]) * D, D, false);
          Prefetch(out + int64_t(tok[p + 1 + o]) * D, D, false);
          for (int64_t k = 0; k < K; ++k) Prefetch(out + int64_t(draws(p + 1)[k]) * D, D, false);
        }
        if (!valid(p)) continue;
        const float* hp = in + int64_t(tok[p]) * D;
        const int32_t ctx = tok[p + o];
        const float* c = out + int64_t(ctx) * D;
        const float sc = Dot(hp, c, D);
        const bool live_c = !(max_score > 0.0f) || std::fabs(sc) < max_score;
        const float ec = std::exp(-std::fabs(sc));
        const float sig_c = SigmoidFrom(sc, ec);
        const float gc = live_c ? sig_c - 1.0f : 0.0f;
        g_c[p] = gc;
        LogSum tails;
        tails.Add(ec);
        float linear = std::fmax(-sc, 0.0f);
        float* dhp = &dh[p * D];
        for (int64_t d = 0; d < D; ++d) dhp[d] = gc * c[d];
        // the cap's sums: σ'(s)·|x|² of each score for both of its rows, and |σ(s) − label|
        const float hh = capped ? Dot(hp, hp, D) : 0.0f;
        const float sp_c = live_c ? sig_c * (1.0f - sig_c) : 0.0f;
        float curv_h = capped ? sp_c * Dot(c, c, D) : 0.0f, cross_h = std::fabs(gc);
        for (int64_t k = 0; k < K; ++k) {
          const int32_t id = draws(p)[k];
          const float* n = out + int64_t(id) * D;
          const bool skipped = skip_target && id == ctx;
          float g = 0.0f;
          if (!skipped) {
            const float sn = Dot(hp, n, D);
            const bool live_n = !(max_score > 0.0f) || std::fabs(sn) < max_score;
            const float en = std::exp(-std::fabs(sn));
            const float sig_n = SigmoidFrom(sn, en);
            g = live_n ? sig_n : 0.0f;
            tails.Add(en);
            linear += std::fmax(sn, 0.0f);
            for (int64_t d = 0; d < D; ++d) dhp[d] += g * n[d];
            if (capped) {
              const float sp_n = live_n ? sig_n * (1.0f - sig_n) : 0.0f;
              curv_h += sp_n * Dot(n, n, D);
              cross_h += g;
              cur_out[id] += lr * (sp_n * hh) + kx * g;
            }
          }
          g_n[p * K + k] = g;
        }
        if (capped) {
          cur_in[tok[p]] += lr * curv_h + kx * cross_h;
          cur_out[ctx] += lr * (sp_c * hh) + kx * std::fabs(gc);
        }
        loss += linear + tails.Total();
      }
      // 2. the output rows against the input rows as the sub-step found them: the context
      // rows, then the draws; the input rows last (each scaled by its row's cap)
      for (int64_t p = 0; p < N; ++p) {
        if (!valid(p)) continue;
        if (p + 1 < N && valid(p + 1)) Prefetch(out + int64_t(tok[p + 1 + o]) * D, D, true);
        const float* hp = in + int64_t(tok[p]) * D;
        const int32_t ctx = tok[p + o];
        float* row = out + int64_t(ctx) * D;
        const float a = -lr * g_c[p], r = scale(cur_out, ctx);
        for (int64_t d = 0; d < D; ++d) row[d] += (a * hp[d]) * r;
      }
      for (int64_t p = 0; p < N; ++p) {
        if (!valid(p)) continue;
        const float* hp = in + int64_t(tok[p]) * D;
        if (p + 1 < N && valid(p + 1))
          for (int64_t k = 0; k < K; ++k) Prefetch(out + int64_t(draws(p + 1)[k]) * D, D, true);
        for (int64_t k = 0; k < K; ++k) {
          const int32_t id = draws(p)[k];
          float* row = out + int64_t(id) * D;
          const float g = g_n[p * K + k], r = scale(cur_out, id);
          for (int64_t d = 0; d < D; ++d) row[d] += (-lr * (g * hp[d])) * r;
        }
      }
      for (int64_t p = 0; p < N; ++p) {
        if (!valid(p)) continue;
        float* row = in + int64_t(tok[p]) * D;
        const float* e = &dh[p * D];
        const float r = scale(cur_in, tok[p]);
        for (int64_t d = 0; d < D; ++d) row[d] += (-lr * e[d]) * r;
      }
      if (capped)   // the sums back to zero for the next sub-step (and call)
        for (int64_t p = 0; p < N; ++p) {
          if (!valid(p)) continue;
          cur_in[tok[p]] = 0.0f;
          cur_out[tok[p + o]] = 0.0f;
          for (int64_t k = 0; k < K; ++k) cur_out[draws(p)[k]] = 0.0f;
        }
    }
  };
  if (row_cap > 0.0f) run(std::true_type{});
  else run(std::false_type{});
  loss_out->typed_data()[0] = loss;
  pairs_out->typed_data()[0] = total_pairs;
  return ffi::Error::Success();
}

// The steps take the same operands and attributes and return (in_embed, out_embed, summed
// loss, pairs): CBOW's pairs are its positions with a context, skip-gram's its valid
// (center, context) pairs.
auto StepBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()   // in_embed (V, D)
      .Arg<ffi::Buffer<ffi::F32>>()   // out_embed (V, D)
      .Arg<ffi::Buffer<ffi::S32>>()   // tokens (B, L)
      .Arg<ffi::Buffer<ffi::S32>>()   // segment (B, L)
      .Arg<ffi::Buffer<ffi::S32>>()   // window (B, L)
      .Arg<ffi::Buffer<ffi::S32>>()   // negatives (B, L, M)
      .Arg<ffi::Buffer<ffi::F32>>()   // learning rate ()
      .Attr<int64_t>("window")
      .Attr<int64_t>("negatives")
      .Attr<float>("max_score")
      .Attr<bool>("skip_target")
      .Attr<float>("row_cap")         // > 0: the curvature cap (the sequential step only)
      .Attr<float>("row_cap_cross")
      .Ret<ffi::Buffer<ffi::F32>>()   // in_embed, updated in place
      .Ret<ffi::Buffer<ffi::F32>>()   // out_embed, updated in place
      .Ret<ffi::Buffer<ffi::F32>>()   // summed loss ()
      .Ret<ffi::Buffer<ffi::F32>>();  // pairs ()
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TranslearnCbowStep, CbowStepImpl, StepBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(TranslearnSkipgramStep, SkipgramStepImpl, StepBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(TranslearnSkipgramSequentialStep, SkipgramSequentialStepImpl,
                              StepBinding());
