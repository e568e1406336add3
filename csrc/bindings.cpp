// metaphys._C: every physics op is declared once here (schema) and implemented per device
// in csrc/<op>/<op>_cpu.cpp (TORCH_LIBRARY_IMPL CPU) and csrc/<op>/<op>_cuda*.{cu,cpp} (CUDA).
// Each op returns (loss [N] float64, grad like the unknown): the per-sample mean squared
// residual over free cells and the gradient that drives the optimizer, in one pass.
// int stencil: 9 (isotropic 9-point Laplacian, default) or 5. bool true_grad: exact gradient
// instead of the Appendix-D detached-neighbour pseudo-gradient.
#include <torch/extension.h>

TORCH_LIBRARY(metaphys, m) {
  m.def("laplace_loss_grad(Tensor u, Tensor mask, Tensor bc, Tensor f, int stencil, bool true_grad) -> (Tensor, Tensor)");
  m.def("diffusion_loss_grad(Tensor c, Tensor c_old, Tensor mask, Tensor bc, Tensor vel, Tensor source, Tensor D, Tensor dt, int stencil, bool true_grad) -> (Tensor, Tensor)");
  m.def("wave_loss_grad(Tensor a, Tensor x_old, Tensor v_old, Tensor mask, Tensor bc, Tensor c, Tensor dt, int stencil, bool true_grad) -> (Tensor, Tensor)");
  m.def("burgers_loss_grad(Tensor v, Tensor v_old, Tensor mask, Tensor bc, Tensor mu, Tensor dt, int stencil, bool true_grad) -> (Tensor, Tensor)");
  // Navier-Stokes on a MAC grid (metaphys/physics/fluid.py). u [N,2,H,W] = (vector potential a,
  // pressure p); a_old [N,1,H,W]; mask [N,1,H,W] and bc [N,2,H,W] on the corner grid, bc and force
  // channels (v_y, v_x); force [N,2,H,W] = force density on the (v_y, v_x) faces; rho, mu, dt [N].
  // Returns (loss [N], TRUE gradient d loss / d u [N,2,H,W]).
  m.def("fluid_loss_grad(Tensor u, Tensor a_old, Tensor mask, Tensor bc, Tensor force, Tensor rho, Tensor mu, Tensor dt, float w_nav=1., float w_bound=20., float w_a=0.1, float w_p=0.1) -> (Tensor, Tensor)");
  // 3-D Navier-Stokes on a MAC grid (metaphys/physics/fluid3d.py). u [N,4,D,H,W] = (edge vector potential
  // a_z, a_y, a_x, pressure p); a_old [N,3,D,H,W]; mask [N,1,D,H,W] and bc [N,3,D,H,W] on the nodes; force
  // [N,3,D,H,W] on the faces; vector channels (z, y, x); rho, mu, dt [N]. Returns (loss [N], TRUE grad).
  m.def("fluid3d_loss_grad(Tensor u, Tensor a_old, Tensor mask, Tensor bc, Tensor force, Tensor rho, Tensor mu, Tensor dt, float w_nav=1., float w_bound=20., float w_a=0.1, float w_p=0.1) -> (Tensor, Tensor)");
  // 3-D Laplace / Poisson (metaphys/physics/laplace3d.py): u, mask, bc, f [N,1,D,H,W]; int stencil: 27
  // (isotropic 27-point Laplacian, default) or 7. Returns (loss [N], pseudo or true gradient).
  m.def("laplace3d_loss_grad(Tensor u, Tensor mask, Tensor bc, Tensor f, int stencil, bool true_grad) -> (Tensor, Tensor)");
  // Spring-mass cloth (metaphys/physics/cloth.py). a, x_old, v_old, pin_x [N,3,H,W] (channels x, y, z);
  // pin_w [N,1,H,W] in [0,1] (1 = hard pin); colliders [N,K,18]: the collider table (metaphys/colliders.py:
  // kind code, rotation 3x3, centre, 4 parameters, friction; kind 0 = unused); gravity, wind [N,3]; the rest
  // per-sample [N].
  // Returns (loss [N], TRUE gradient d loss / d a [N,3,H,W]).
  m.def("cloth_loss_grad(Tensor a, Tensor x_old, Tensor v_old, Tensor pin_w, Tensor pin_x, Tensor colliders, Tensor gravity, Tensor wind, Tensor rest, Tensor k_stretch, Tensor k_shear, Tensor k_bend, Tensor mass, Tensor damping, Tensor k_pin, Tensor k_contact, Tensor margin, Tensor dt) -> (Tensor, Tensor)");
  // The Hessian of cloth_loss_grad's loss w.r.t. a, per vertex: blocks [N, 13, 3, 3, H, W] float64,
  // blocks[n,k,r,c,i,j] = d^2 loss_n / d a[n,r,i,j] d a[n,c,i+di_k,j+dj_k], offsets (0,0) then
  // ClothProblem.hessian_offsets; 0 outside the grid and in rows/columns of hard pins. project: 0 exact,
  // 1 every element's Hessian made PSD (projected Newton), 2 only the springs' and the contacts' (their
  // closed forms; shear and bend exact). Twin: metaphys/physics/cloth_hessian.py.
  m.def("cloth_hessian(Tensor a, Tensor x_old, Tensor v_old, Tensor pin_w, Tensor pin_x, Tensor colliders, Tensor gravity, Tensor wind, Tensor rest, Tensor k_stretch, Tensor k_shear, Tensor k_bend, Tensor mass, Tensor damping, Tensor k_pin, Tensor k_contact, Tensor margin, Tensor dt, int project) -> Tensor");
}

static bool with_cuda() {
#ifdef METAPHYS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "metaphys compiled physics kernels (float64); ops live in torch.ops.metaphys";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
}
