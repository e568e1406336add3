// Solve a Poisson problem with the Metamizer from C++, through the TorchScript solver module
// (weights/metamizer_solver.pt, written by `metaphys export-solver`). No Python involved.
//
//   solve_poisson SOLVER.pt [--size N] [--threads T] [--out PREFIX]
//
// The problem: -Laplace(u) = f on an N x N grid, u = 0 on a 2-cell frame, u = 1 on a plate
// (an obstacle held at fixed potential), and two opposite charges in f. It is solved twice:
//   1. by the module alone: solve_poisson runs the whole loop with its built-in 9-point stencil;
//   2. by the ask/tell loop, with the physics computed here (5-point stencil in libtorch ops),
//      the way a game engine or a C++ tool drives the solver with its own gradient.
// Each prints its residual history; --out PREFIX writes each solution as raw float64
// (PREFIX.builtin.f64, PREFIX.asktell.f64; row-major N x N) for tests/test_cpp_example.py.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <tuple>

namespace {

const double kTol = 1e-20;
const int64_t kMaxIterations = 300;

struct Poisson {
  torch::Tensor mask, bc, f;  // [1, 1, N, N] float64
};

// The geometry above; tests/test_cpp_example.py builds the same in Python.
Poisson make_problem(int64_t n) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  using torch::indexing::Slice;
  Poisson p{torch::zeros({1, 1, n, n}, opts), torch::zeros({1, 1, n, n}, opts), torch::zeros({1, 1, n, n}, opts)};
  p.mask.index_put_({"...", Slice(0, 2), Slice()}, 1.0);
  p.mask.index_put_({"...", Slice(n - 2, n), Slice()}, 1.0);
  p.mask.index_put_({"...", Slice(), Slice(0, 2)}, 1.0);
  p.mask.index_put_({"...", Slice(), Slice(n - 2, n)}, 1.0);
  auto plate = std::make_tuple(Slice(n / 4, n / 4 + n / 16), Slice(n / 4, 3 * n / 4));
  p.mask.index_put_({"...", std::get<0>(plate), std::get<1>(plate)}, 1.0);
  p.bc.index_put_({"...", std::get<0>(plate), std::get<1>(plate)}, 1.0);
  p.f.index_put_({"...", Slice(n / 2, n / 2 + 4), Slice(n / 4, n / 4 + 4)}, 0.1);
  p.f.index_put_({"...", Slice(n / 2, n / 2 + 4), Slice(3 * n / 4 - 4, 3 * n / 4)}, -0.1);
  return p;
}

// The caller's physics: loss = mean over free cells of r^2, r = Laplace5(u~) + f with u~ = m*bc + (1-m)*u,
// and its pseudo-gradient (the neighbours held fixed): 2/N_free * (-4) * free * r.
std::tuple<torch::Tensor, torch::Tensor> poisson5(const torch::Tensor& u, const Poisson& p) {
  using torch::indexing::Slice;
  auto free = 1.0 - p.mask;
  auto ut = p.mask * p.bc + free * u;
  auto q = torch::constant_pad_nd(ut, {1, 1, 1, 1});
  int64_t h = u.size(2), w = u.size(3);
  auto r = q.index({"...", Slice(0, h), Slice(1, w + 1)}) + q.index({"...", Slice(2, h + 2), Slice(1, w + 1)}) +
           q.index({"...", Slice(1, h + 1), Slice(0, w)}) + q.index({"...", Slice(1, h + 1), Slice(2, w + 2)}) -
           4.0 * ut + p.f;
  auto count = free.flatten(1).sum(1).clamp_min(1.0);
  auto fr = free * r;
  auto loss = (fr * r).flatten(1).sum(1) / count;
  auto grad = (2.0 / count).view({-1, 1, 1, 1}) * -4.0 * free * fr;
  return {loss, grad};
}

void print_history(const char* label, const torch::Tensor& history, double seconds) {
  auto h = history.select(1, 0).contiguous();
  for (int64_t i = 0; i < h.size(0); ++i)
    std::printf("%s %ld %.17e\n", label, static_cast<long>(i), h[i].item<double>());
  std::printf("%s: %ld iterations to MSR %.3e, %.1f ms (%.2f ms per iteration)\n", label,
              static_cast<long>(h.size(0) - 1), h[h.size(0) - 1].item<double>(), 1e3 * seconds,
              1e3 * seconds / std::max<int64_t>(1, h.size(0) - 1));
}

void write_raw(const std::string& path, const torch::Tensor& u) {
  auto c = u.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(c.data_ptr<double>()), c.numel() * sizeof(double));
  if (!out) throw std::runtime_error("cannot write " + path);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SOLVER.pt [--size N] [--threads T] [--out PREFIX]\n", argv[0]);
    return 2;
  }
  int64_t n = 64;
  int threads = 1;  // one thread: fastest on a machine whose other cores are busy
  std::string out;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    if (key == "--size") n = std::atol(argv[i + 1]);
    else if (key == "--threads") threads = std::atoi(argv[i + 1]);
    else if (key == "--out") out = argv[i + 1];
    else { std::fprintf(stderr, "unknown option %s\n", key.c_str()); return 2; }
  }
  if (n < 16 || threads < 1) {
    std::fprintf(stderr, "--size must be >= 16 and --threads >= 1\n");
    return 2;
  }
  at::set_num_threads(threads);
  torch::jit::script::Module solver;
  try {
    solver = torch::jit::load(argv[1]);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "cannot load the solver module %s: %s\n", argv[1], e.what_without_backtrace());
    return 1;
  }
  solver.eval();
  torch::NoGradGuard no_grad;
  Poisson p = make_problem(n);
  std::printf("Poisson %ldx%ld, tolerance %.0e, at most %ld iterations, %d thread(s)\n", static_cast<long>(n),
              static_cast<long>(n), kTol, static_cast<long>(kMaxIterations), threads);

  // 1. The module runs the whole loop on its built-in problem (9-point stencil).
  auto t0 = std::chrono::steady_clock::now();
  auto result = solver.get_method("solve_poisson")(
      {p.mask, p.bc, p.f}, {{"stencil", 9}, {"tol", kTol}, {"max_iterations", kMaxIterations}});
  double builtin_s = seconds_since(t0);
  auto u_builtin = result.toTupleRef().elements()[0].toTensor();
  print_history("builtin", result.toTupleRef().elements()[1].toTensor(), builtin_s);

  // 2. Ask/tell: the module asks for a point, this program evaluates its own physics there.
  t0 = std::chrono::steady_clock::now();
  auto u0 = p.mask * p.bc;  // held cells at their values, 0 elsewhere
  c10::IValue state = solver.get_method("start")(
      {u0, p.mask, p.bc}, {{"tol", kTol}, {"max_iterations", kMaxIterations}});
  while (!solver.run_method("done", state).toBool()) {
    auto [loss, grad] = poisson5(solver.run_method("query", state).toTensor(), p);
    state = solver.run_method("tell", state, loss, grad);
  }
  double asktell_s = seconds_since(t0);
  auto u_asktell = solver.run_method("solution", state).toTensor();
  print_history("asktell", solver.run_method("residuals", state).toTensor(), asktell_s);

  if (!out.empty()) {
    write_raw(out + ".builtin.f64", u_builtin);
    write_raw(out + ".asktell.f64", u_asktell);
  }
  return 0;
}
