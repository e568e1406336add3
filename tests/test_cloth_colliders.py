"""Rotated boxes and friction (issue #26): the oriented-box distance, the extra terms' gradient,
and Coulomb's law on a slope."""
import numpy as np
import pytest
import torch

from metaphys import colliders as kinds
from metaphys.physics.cloth import ClothProblem, box_sdf, oriented_box_sdf, rest_grid, rotation_matrix
from metaphys.sims.cloth import ClothSim, euler_xyz_degrees, flat_cloth


def _obb(center, half, R):
    return torch.cat([torch.as_tensor(center, dtype=torch.float64), torch.as_tensor(half, dtype=torch.float64),
                      R.reshape(-1)]).view(1, 1, 15)


def test_oriented_box_distance_is_the_axis_box_distance_in_the_box_frame():
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(1, 3, 6, 7, dtype=torch.float64, generator=g)
    R = rotation_matrix(0.3, 0.5, -0.2)
    obb = _obb([0.1, -0.2, 0.3], [0.5, 1.0, 0.7], R)
    local = torch.einsum("ji,njhw->nihw", R, x - obb[0, 0, :3].view(1, 3, 1, 1))
    ref = box_sdf(local, torch.tensor([[[0.0, 0.0, 0.0, 0.5, 1.0, 0.7]]], dtype=torch.float64))
    assert torch.allclose(oriented_box_sdf(x, obb), ref, atol=1e-12)
    # the identity rotation is the axis-aligned box
    ident = _obb([0.1, -0.2, 0.3], [0.5, 1.0, 0.7], torch.eye(3, dtype=torch.float64))
    axis = box_sdf(x, torch.tensor([[[0.1, -0.2, 0.3, 0.5, 1.0, 0.7]]], dtype=torch.float64))
    assert torch.allclose(oriented_box_sdf(x, ident), axis, atol=1e-12)


def test_euler_angles_follow_blenders_xyz_convention():
    R = euler_xyz_degrees([90, 0, 0])          # +90 degrees about x takes y to z
    assert np.allclose(R @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    R = euler_xyz_degrees([0, 0, 90])          # about z takes x to y
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    R = euler_xyz_degrees([30, 20, 10])
    assert np.allclose(R, euler_xyz_degrees([0, 0, 10]) @ euler_xyz_degrees([0, 20, 0]) @ euler_xyz_degrees([30, 0, 0]))


def _problem_with_extras():
    n = 8
    x = rest_grid(1, n, n, rotation=rotation_matrix(0.0, 0.4, 0.0)) + 0.02 * torch.randn(
        1, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    prob = ClothProblem(x, gravity=(0.0, 0.0, -0.3), k_stretch=200.0, k_contact=500.0, margin=0.5,
                        v_old=0.1 * torch.ones(1, 3, n, n, dtype=torch.float64))
    R = rotation_matrix(0.2, 0.1, 0.3)
    prob.set_colliders(obbs=_obb([3.5, 0.0, -1.2], [4.0, 4.0, 1.0], R))
    prob.set_friction([0.6])
    assert float(prob.fields["friction"][:, 0].max()) > 0, "some vertices must start in contact"
    return prob


def test_extra_terms_gradient_matches_finite_differences_and_autograd():
    prob = _problem_with_extras()
    a = 0.05 * torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    loss, grad = prob.loss_and_grad(a)
    v = torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    eps = 1e-6
    fd = (prob.loss_and_grad(a + eps * v)[0] - prob.loss_and_grad(a - eps * v)[0]) / (2 * eps)
    assert abs(float(fd[0]) - float((grad * v).sum())) <= 1e-6 * max(1.0, abs(float(fd[0])))
    aa = a.clone().requires_grad_(True)
    (g_pure,) = torch.autograd.grad(prob.pure_loss(aa).sum(), aa)
    assert torch.allclose(g_pure, grad, atol=1e-9, rtol=1e-7)


def test_a_non_rotation_is_refused():
    prob = _problem_with_extras()
    with pytest.raises(ValueError, match="rotation matrix"):
        prob.set_colliders(obbs=_obb([0, 0, 0], [1, 1, 1], 2 * torch.eye(3, dtype=torch.float64)))


def _slide(mu, frames=24, n=16):
    R = euler_xyz_degrees([30, 0, 0])
    rest = flat_cloth(n, n, 0.6, height=0.0) @ R.T + R[:, 2] * 0.205
    box = {"type": "box", "center": [0, 0, 0], "half_extents": [1.0, 1.5, 0.2], "rotation": [30, 0, 0],
           "friction": mu}
    sim = ClothSim(n, n, rest_positions=rest, pin_weights=np.zeros(n * n), colliders=[box], threads=1)
    along = []
    for _ in range(frames):
        rec = sim.step()
        assert rec.converged
        along.append(float(sim.positions.reshape(-1, 3).mean(0) @ R[:, 1]))
    return np.array(along)


def test_coulomb_friction_holds_cloth_on_a_30_degree_slope_only_above_tan_30():
    stuck = _slide(0.7)      # tan(30 deg) = 0.577 < 0.7: static
    assert abs(stuck[-1] - stuck[0]) < 0.01
    free = _slide(0.0)
    assert free[-1] - free[0] < -0.5
    sliding = _slide(0.5)    # Coulomb: a = g (sin 30 - 0.5 cos 30) = 0.66 m/s^2 down the slope
    v = np.diff(sliding) * 24
    accel = (v[-1] - v[11]) / (11 / 24)
    assert -0.9 < accel < -0.4, accel


def test_the_spec_and_the_api_take_rotation_and_friction():
    from metaphys.spec.params import cloth_parameters
    p = cloth_parameters({"colliders": [{"type": "box", "center": [0, 0, 0.3], "half_extents": [0.5, 0.5, 0.1],
                                         "rotation": [0, 15, 0], "friction": 0.4}]}, size=16)
    sim = ClothSim.from_params(p)
    table = sim.problem.fields["colliders"][0]          # one row: a box with the rotation, friction 0.4
    assert table.shape == (1, kinds.WIDTH) and int(table[0, kinds.KIND]) == kinds.BY_NAME["box"].code
    assert np.allclose(table[0, kinds.ROTATION].numpy(), euler_xyz_degrees([0, 15, 0]).reshape(-1))
    assert float(table[0, kinds.FRICTION]) == 0.4
    with pytest.raises(ValueError, match="rotation"):
        ClothSim(16, 16, colliders=[{"type": "box", "center": [0, 0, 0], "half_extents": [1, 1, 1],
                                     "rotation": [1, 2]}])
    with pytest.raises(ValueError, match="friction"):
        ClothSim(16, 16, colliders=[{"type": "sphere", "center": [0, 0, 0], "radius": 1, "friction": -1}])


# --- triangle-mesh colliders -------------------------------------------------------------------------
from metaphys.sims.mesh_collider import MeshCollider, contact_planes  # noqa: E402


def _box_mesh(half):
    import trimesh
    m = trimesh.creation.box(extents=2 * np.asarray(half, dtype=np.float64))
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def test_mesh_contact_planes_give_the_exact_distance_of_a_box_mesh():
    half = np.array([0.4, 0.3, 0.2])
    V, F = _box_mesh(half)
    mesh = MeshCollider(V, F, center=[0.1, 0.0, -0.1], rotation=[20, -10, 35])
    pts = np.random.default_rng(0).uniform(-1, 1, size=(500, 3))
    planes = contact_planes([mesh], 0.0, pts, np.full(len(pts), 10.0), length_unit=1.0)
    d_plane = ((pts - planes[0:3].T) * planes[3:6].T).sum(1)       # the plane's distance at the query point
    R = torch.as_tensor(euler_xyz_degrees([20, -10, 35]))
    obb = _obb([0.1, 0.0, -0.1], half, R)
    x = torch.as_tensor(pts.T.reshape(1, 3, 1, -1))
    exact = oriented_box_sdf(x, obb).reshape(-1).numpy()
    outside = exact > 1e-6      # outside the distance to a box is the distance to its closest point
    assert np.allclose(d_plane[outside], exact[outside], atol=1e-9)
    inside = exact < -1e-6      # inside: the plane of the nearest face, so the same distance
    assert np.allclose(d_plane[inside], exact[inside], atol=1e-9)
    assert planes[6].all() and np.allclose(np.linalg.norm(planes[3:6], axis=0), 1.0)


def test_mesh_collider_refuses_bad_geometry_by_name():
    V, F = _box_mesh([1, 1, 1])
    with pytest.raises(ValueError, match="faces index vertices"):
        MeshCollider(V, F + 100, center=[0, 0, 0])
    with pytest.raises(ValueError, match="vertices must be"):
        MeshCollider(V[:, :2], F, center=[0, 0, 0])


def test_cloth_drapes_over_a_sphere_mesh_without_entering_it():
    import trimesh
    ico = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    center = np.array([0.0, 0.0, 0.5])
    col = {"type": "mesh", "center": center.tolist(), "vertices": np.asarray(ico.vertices).tolist(),
           "faces": np.asarray(ico.faces).tolist()}
    sim = ClothSim(16, 16, pin_weights=np.zeros(256), colliders=[col], threads=1,
                   rest_positions=flat_cloth(16, 16, 1.0, height=0.9))
    inner = 0.3 * np.cos(np.pi / 5 / 2) ** 2      # well inside every facet of the icosphere
    for _ in range(10):
        rec = sim.step()
        assert rec.converged
        d = np.linalg.norm(sim.positions.reshape(-1, 3) - center, axis=1)
        assert d.min() > inner
    assert sim.positions[..., 2].max() < 0.9      # it fell and rests on the sphere
    assert float(sim.problem.fields["planes"][:, 6].sum()) > 0


def test_a_mesh_collider_in_a_spec_from_npy_files(tmp_path):
    from metaphys.spec.params import cloth_parameters
    V, F = _box_mesh([0.5, 0.5, 0.1])
    np.save(tmp_path / "v.npy", V)
    np.save(tmp_path / "f.npy", F)
    p = cloth_parameters({"colliders": [{"type": "mesh", "center": [0, 0, 0.3], "vertices": str(tmp_path / "v.npy"),
                                         "faces": str(tmp_path / "f.npy"), "friction": 0.3}]}, size=16)
    sim = ClothSim.from_params(p)
    assert sim.colliders[0]["type"] == "mesh" and sim.colliders[0]["mesh"].friction == 0.3
    sim.step()
    with pytest.raises(ValueError, match="faces"):
        cloth_parameters({"colliders": [{"type": "mesh", "center": [0, 0, 0], "vertices": V.tolist(),
                                         "faces": [[0, 1, -2]]}]}, size=16)


def test_closed_form_extra_gradients_equal_autograd_with_planes_friction_and_boxes():
    from metaphys.physics.cloth import extra_terms, extra_terms_and_grad
    prob = _problem_with_extras()
    n, _, h, w = prob.shape
    g = torch.Generator().manual_seed(7)
    planes = torch.zeros(n, 8, h, w, dtype=torch.float64)
    planes[:, 0:3] = prob.fields["x_old"] + 0.3 * torch.randn(n, 3, h, w, dtype=torch.float64, generator=g)
    nrm = torch.randn(n, 3, h, w, dtype=torch.float64, generator=g)
    planes[:, 3:6] = nrm / nrm.norm(dim=1, keepdim=True)
    planes[:, 6] = (torch.rand(n, h, w, generator=g) > 0.3).to(torch.float64)
    planes[:, 7] = 0.4
    prob.set_contact_planes(planes)
    a = 0.05 * torch.randn(prob.shape, dtype=torch.float64, generator=g)
    a[..., 0, 0] = 1e-9    # a vertex with (almost) no tangential motion: friction's smooth branch
    loss, grad = extra_terms_and_grad(a, prob.fields)
    aa = a.clone().requires_grad_(True)
    ref = extra_terms(aa, prob.fields)
    (g_ref,) = torch.autograd.grad(ref.sum(), aa)
    assert torch.allclose(loss, ref.detach(), rtol=1e-12, atol=1e-15)
    assert torch.allclose(grad, prob.impose(g_ref), rtol=1e-9, atol=1e-13)


# --- self-collision ----------------------------------------------------------------------------------
from metaphys.sims.mesh_collider import grid_self_intersections  # noqa: E402


def test_the_intersection_check_finds_a_layer_through_another():
    flat = flat_cloth(8, 8, 1.0, height=0.0)
    assert grid_self_intersections(flat, 8, 8) == 0
    folded = flat.reshape(8, 8, 3).copy()
    folded[4:, :, 2] = 0.1                          # the second half lifted: still no crossing
    folded[4:, :, 1] = folded[3::-1, :, 1]          # ...and folded back over the first half
    assert grid_self_intersections(folded.reshape(-1, 3), 8, 8) == 0
    folded[6, 3, 2] = -0.1                          # one vertex pushed through the lower layer
    assert grid_self_intersections(folded.reshape(-1, 3), 8, 8) > 0


def _hammock(n=16, self_collision=True):
    """A lower layer hanging between two pinned rods, an upper layer (the rest of the grid, folded
    over) falling onto it from 12 cm above."""
    size, half = 0.8, n // 2
    L = size / (n - 1)
    pos = np.zeros((n, n, 3))
    for i in range(n):
        for j in range(n):
            pos[i, j] = [j * L - size / 2, i * L, 0.5] if i < half else [j * L - size / 2, (n - 1 - i) * L + 0.5 * L, 0.62]
    pins = np.zeros((n, n))
    pins[0, :] = pins[half - 1, :] = 1.0
    return ClothSim(n, n, rest_positions=pos.reshape(-1, 3), pin_weights=pins.reshape(-1), threads=1,
                    self_collision=self_collision)


def test_self_collision_keeps_a_falling_layer_from_passing_through_another():
    free = _hammock(self_collision=False)
    crossed = False
    for _ in range(4):
        free.step()
        crossed |= grid_self_intersections(free.positions.reshape(-1, 3), 16, 16) > 0
    assert crossed, "without self-collision the upper layer falls through (the scene tests something)"
    sim = _hammock()
    for _ in range(10):
        rec = sim.step()
        assert rec.converged
        assert grid_self_intersections(sim.positions.reshape(-1, 3), 16, 16) == 0
    assert sim.problem.fields["self_pairs"].shape[1] > 0


def test_max_step_stops_a_pair_at_the_hard_distance_and_finds_pairs_it_was_not_given():
    prob = ClothProblem(rest_grid(1, 8, 8), k_contact=100.0)
    x = prob.fields["x_old"].clone()
    x[0, :, 7, 7] = x[0, :, 0, 0] + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)   # corner 63 above corner 0
    prob.fields["x_old"] = x
    prob.set_self_pairs(torch.zeros(0, 2, dtype=torch.long), 1.0)   # no candidates yet
    gap = x[0, :, 7, 7] - x[0, :, 0, 0]
    step = torch.zeros(prob.shape, dtype=torch.float64)
    step[0, :, 0, 0] = gap                          # vertex 0 would land on vertex 63
    a = torch.zeros(prob.shape, dtype=torch.float64)
    alpha = prob.max_step(a, step)
    hit = 1.0 - prob.SELF_HARD_FRACTION / float(gap.norm())   # where the pair would reach the hard distance
    assert alpha == pytest.approx(0.9 * hit, rel=1e-9)
    assert [0, 63] in prob.fields["self_pairs"][0].tolist()   # the broad phase added the pair
    assert prob.max_step(a, -step) == 1.0           # moving apart is never limited


def test_self_collision_pairs_stay_out_of_the_colored_probes():
    from metaphys.optim.newton import sparse_hessian
    prob = _problem_with_extras()
    prob.fields["planes"] = torch.zeros_like(prob.fields["planes"])
    x = prob.fields["x_old"].clone()
    x[0, :, 5, 5] = x[0, :, 0, 0] + 0.3            # two far-apart grid vertices close in space
    prob.fields["x_old"] = x
    prob.set_self_pairs([[0, 5 * 8 + 5]], 1.0)
    a = torch.zeros(prob.shape, dtype=torch.float64)
    H = sparse_hessian(prob, a).toarray()
    v = torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    aa = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(prob.pure_loss(aa).sum(), aa, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), aa)
    # the pair's blocks are the PSD part of its Hessian; with the pair's tangential curvature added
    # back the products are exact: compare along the pair's direction only
    err = np.abs(H @ v.flatten().numpy() - hv.flatten().numpy())
    i, j = 0, 5 * 8 + 5
    rows = [c * 64 + k for c in range(3) for k in range(64) if k not in (i, j)]
    assert err[rows].max() <= 1e-6 * np.abs(hv.numpy()).max()      # no aliasing into other rows
    assert H[i, j + 64 * 0] != 0                                      # the pair coupling is there


def test_self_collision_needs_the_newton_solver():
    with pytest.raises(ValueError, match="self_collision"):
        ClothSim(16, 16, self_collision=True, solver="auto")


# --- per-collider thickness (Blender's Collision modifier: Thickness Outer) ----------------------------
def test_collider_thickness_inflates_each_collider_by_its_excess_over_the_margin():
    n, margin = 16, 0.25
    L = 1.0 / (n - 1)
    colliders = [{"type": "sphere", "center": [0, 0, 0], "radius": 0.2, "thickness": 0.05},
                 {"type": "box", "center": [0, 0, -1], "half_extents": [0.5, 0.5, 0.1]},
                 {"type": "box", "center": [0, 0, -2], "half_extents": [0.5, 0.5, 0.1], "thickness": 0.0}]
    sim = ClothSim(n, n, colliders=colliders, contact_margin=margin, threads=1)
    grow = 0.05 - margin * L
    table = sim.problem.fields["colliders"][0]
    prm = table[:, kinds.PARAMS].numpy() * L
    assert prm[0, 0] == pytest.approx(0.2 + grow, rel=1e-12)
    assert np.allclose(prm[1, :3], [0.5, 0.5, 0.1])                               # no thickness: as given
    assert np.allclose(prm[2, :3], np.array([0.5, 0.5, 0.1]) - margin * L)         # 0: touching
    with pytest.raises(ValueError, match="thickness"):
        ClothSim(n, n, colliders=[{"type": "sphere", "center": [0, 0, 0], "radius": 0.001, "thickness": 0.0}])
    with pytest.raises(ValueError, match="thickness"):
        ClothSim(n, n, colliders=[{"type": "sphere", "center": [0, 0, 0], "radius": 0.1, "thickness": -0.01}])


def test_mesh_collider_thickness_moves_its_contact_planes_out_along_the_normal():
    V = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64)
    F = np.array([[0, 1, 2], [0, 2, 3]])
    pts = np.array([[0.1, 0.2, 0.05], [0.3, -0.4, 0.02]])
    band = np.full(2, 1.0)
    base = contact_planes([MeshCollider(V, F, [0, 0, 0])], 0.0, pts, band, 1.0)
    thick = contact_planes([MeshCollider(V, F, [0, 0, 0], offset=0.03)], 0.0, pts, band, 1.0)
    assert np.allclose(thick[3:6], base[3:6]) and np.allclose(thick[5], [1.0, 1.0])   # same normals: +z
    assert np.allclose(thick[0:3] - base[0:3], 0.03 * base[3:6])


def test_cloth_rests_at_the_colliders_thickness():
    """A sheet dropped on a box settles with its lowest vertex about `thickness` above the top face
    (the penalty lets it sink a little into the margin under its weight: compared with 2 thicknesses)."""
    def rest_gap(thickness):
        n = 16
        box = {"type": "box", "center": [0, 0, -0.1], "half_extents": [1.0, 1.0, 0.1], "thickness": thickness}
        sim = ClothSim(n, n, rest_positions=flat_cloth(n, n, 0.5, height=thickness + 0.01),
                       pin_weights=np.zeros(n * n), colliders=[box], threads=1)
        for _ in range(12):
            assert sim.step().converged
        return float(sim.positions[..., 2].min())
    thin, thick = rest_gap(0.01), rest_gap(0.04)
    assert 0.004 < thin < 0.012
    assert thick - thin == pytest.approx(0.03, abs=0.003)


def test_the_friction_majorizer_lies_above_the_friction_energy_and_keeps_its_gradient():
    """Newton-Krylov adds ``curvature_majorizer`` to the friction's exact Hessian: the quadratic with
    that curvature must touch the friction energy at the current slip (same value and gradient) and
    lie above it for any tangential move, sliding or stuck, and be PSD with nothing at pinned or
    contact-free vertices."""
    from metaphys.physics.cloth import FRICTION_SLIP, _friction_curvature, cloth_state, friction_energy

    prob = _problem_with_extras()
    fl = prob.fields
    a = 0.05 * torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x0, _ = cloth_state(a, fl["x_old"], fl["v_old"], fl["pin_w"], fl["pin_x"], fl["dt"])
    # slips from deep inside the static regime to far beyond it
    for slip in (0.1 * FRICTION_SLIP, 0.9 * FRICTION_SLIP, 3 * FRICTION_SLIP, 100 * FRICTION_SLIP):
        nrm = fl["friction"][:, 1:4]
        t = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
        t = t - (t * nrm).sum(1, keepdim=True) * nrm
        t = slip * t / t.norm(dim=1, keepdim=True)
        x = fl["x_old"] + t                                    # tangential slip of every vertex
        with torch.enable_grad():
            xx = x.clone().requires_grad_(True)
            e0 = friction_energy(xx, fl["x_old"], fl["friction"])
            (g,) = torch.autograd.grad(e0.sum(), xx)
        _, major = _friction_curvature(x, fl["x_old"], fl["friction"])
        for step in (0.5 * slip, 2 * slip, 10 * FRICTION_SLIP):
            d = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
            d = step * d / d.norm(dim=1, keepdim=True)
            quad = e0 + (g * d).sum(1) + 0.5 * torch.einsum("nrhw,nrchw,nchw->nhw", d, major, d)
            e1 = friction_energy(x + d, fl["x_old"], fl["friction"])
            assert bool((e1 <= quad + 1e-12 * (1 + quad.abs())).all()), (slip, step)
    M = prob.curvature_majorizer(a).toarray()
    assert np.abs(M - M.T).max() <= 1e-14 * np.abs(M).max()
    assert np.linalg.eigvalsh(M).min() >= -1e-12 * np.abs(M).max() and np.abs(M).max() > 0
    n = prob.shape[-1] * prob.shape[-2]
    without = (fl["friction"][0, 0] == 0).flatten().numpy()
    for c in range(3):
        assert not M[c * n:(c + 1) * n][without].any()        # no friction, no correction
    prob.fields["friction"] = torch.zeros_like(fl["friction"])
    assert prob.curvature_majorizer(a) is None


def test_newton_krylov_converges_on_the_readme_collider_scene_with_friction():
    """The scene that stalled (frame 2: 100 Newton iterations, 412 line-search halvings, residual
    6e-5 > 1e-5) while friction's exact curvature let steps overshoot the cone's tip."""
    import trimesh
    body = trimesh.creation.capsule(height=1.2, radius=0.18)
    sim = ClothSim(24, 24, threads=1, colliders=[
        {"type": "box", "center": [0, 0, 0], "half_extents": [1, 1, 0.2], "rotation": [30, 0, 0], "friction": 0.7},
        {"type": "mesh", "center": [0, 0, 0.3], "vertices": body.vertices, "faces": body.faces, "friction": 0.3}])
    sim.run(2)
    assert all(r.converged for r in sim.records)
    assert sim.records[1].newton_iterations < 80, [r.newton_iterations for r in sim.records]


def test_the_analytic_hessian_with_every_extra_term_equals_autograd():
    """``ClothProblem.hessian_matrix`` (the Newton default) with rotated boxes, mesh contact planes,
    friction and a pinned corner: its products equal exact autograd Hessian-vector products of the
    loss, and with ``identity_at_pins`` the pinned rows are identity rows."""
    prob = _problem_with_extras()
    n = prob.shape[-1]
    planes = torch.zeros(1, 8, n, n, dtype=torch.float64)
    x = prob.fields["x_old"]
    planes[0, 0:3] = x[0] + torch.tensor([0.0, 0.0, -0.2], dtype=torch.float64).view(3, 1, 1)  # 0.2 below
    planes[0, 5] = 1.0                                      # normal +z
    planes[0, 6, : n // 2] = 1.0                            # half the vertices touch a plane
    planes[0, 7] = 0.4
    prob.set_contact_planes(planes)
    pins = torch.zeros(1, 1, n, n, dtype=torch.float64)
    pins[0, 0, 0, 0] = 1.0
    prob.set_pins(pin_w=pins, pin_x=x)
    prob.set_friction([0.6])
    a = prob.impose(0.05 * torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    H = prob.hessian_matrix(a)
    aa = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(prob.pure_loss(aa).sum(), aa, create_graph=True)
    for seed in (1, 2):
        v = prob.impose(torch.randn(prob.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
        (hv,) = torch.autograd.grad((g * v).sum(), aa, retain_graph=True)
        # free rows only: autograd's reference is NaN at the pinned vertex (a masked sqrt(0) of friction)
        free = prob.impose(torch.ones_like(a)).flatten().numpy() != 0
        hv = hv.flatten().numpy()[free]
        err = np.abs((H @ v.flatten().numpy())[free] - hv).max()
        assert err <= 1e-6 * np.abs(hv).max(), err
    Hp = prob.hessian_matrix(a, identity_at_pins=True).toarray()
    for c in range(3):
        row = c * n * n                                             # vertex (0, 0), component c
        assert Hp[row, row] == 1.0 and np.count_nonzero(Hp[row]) == 1 and np.count_nonzero(Hp[:, row]) == 1


# --- the collider table (issue #26 item 1): rotated boxes moved from Python terms into the kernels -----
def _old_obb_energy(a, prob, obb):
    """The rotated-box term as it was a Python-side extra term: k_contact / (HW) * sum over free
    vertices of max(0, margin - sdf)^3, sdf in the box frame with sqrt(|q+|^2 + 1e-300) outside."""
    fl = prob.fields
    hard = (fl["pin_w"] == 1).to(a.dtype)
    dt = fl["dt"].view(-1, 1, 1, 1)
    x = hard * fl["pin_x"] + (1 - hard) * (fl["x_old"] + dt * ((1 - hard) * (fl["v_old"] + dt * a)))
    n, k = obb.shape[:2]
    R = obb[:, :, 6:15].reshape(n, k, 3, 3)
    local = torch.einsum("nkji,nkjhw->nkihw", R, x[:, None] - obb[:, :, :3, None, None])
    q = local.abs() - obb[:, :, 3:6, None, None]
    outside = torch.sqrt((q.clamp_min(0.0) ** 2).sum(2) + 1e-300) * (q.max(dim=2).values > 0)
    sdf = outside + q.max(dim=2).values.clamp_max(0.0)
    pen = (fl["margin"].view(-1, 1, 1, 1) - sdf).clamp_min(0.0)
    hw = float(a.shape[2] * a.shape[3])
    return fl["k_contact"] * ((1 - hard[:, 0]) * (pen ** 3).sum(1)).flatten(1).sum(1) / hw


def _rotated_box_case(seed):
    from physics_cases import cloth_args
    args = cloth_args(seed, 2, 6, 7)
    a, x, v, pw, px, _, grav, wind, *p = args
    g = torch.Generator().manual_seed(seed)
    obbs = []
    for s in range(2):   # a rotated box on a random vertex of each sample, so that vertices touch it
        R = rotation_matrix(*(3 * torch.rand(3, generator=g, dtype=torch.float64)).tolist())
        c = x[s, :, 2, 3] + 0.2 * torch.randn(3, generator=g, dtype=torch.float64)
        obbs.append(torch.cat([c, 0.3 + torch.rand(3, generator=g, dtype=torch.float64), R.reshape(-1)]))
    obb = torch.stack(obbs).view(2, 1, 15)
    kw = dict(zip(__import__("metaphys.physics.cloth", fromlist=["PARAM_NAMES"]).PARAM_NAMES, p))
    with_box = ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, gravity=grav, wind=wind, **kw)
    with_box.set_colliders(obbs=obb)
    without = ClothProblem(x, v_old=v, pin_w=pw, pin_x=px, gravity=grav, wind=wind, **kw)
    return with_box, without, with_box.impose(a), obb


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rotated_box_in_the_kernel_equals_the_old_python_term(seed):
    """Gradient: kernel == twin == autograd of the old Python-side rotated-box term (its energy and
    gradient added to a problem without the box); Hessian: kernel == twin == autograd of it."""
    from metaphys import _ops
    from metaphys.physics.cloth import cloth_twin
    from metaphys.physics.cloth_hessian import blocks_to_csr, blocks_to_csr_pattern, cloth_hessian_twin
    prob, bare, a, obb = _rotated_box_case(seed)
    aa = a.clone().requires_grad_(True)
    e_old = _old_obb_energy(aa, prob, obb)
    assert float(e_old.detach().min()) > 0, "both samples must touch the box"
    (g_old,) = torch.autograd.grad(e_old.sum(), aa)
    l0, g0 = bare.loss_and_grad(a)
    lt, gt = cloth_twin(a, *prob.op_args())
    scale = float(g0.abs().max())
    assert torch.allclose(lt, l0 + e_old.detach(), rtol=1e-12, atol=1e-12 * float(l0.abs().max()))
    assert float((gt - (g0 + g_old)).abs().max()) <= 1e-11 * scale
    if _ops.kernels_available():
        lk, gk = torch.ops.metaphys.cloth_loss_grad(a, *prob.op_args())
        assert torch.allclose(lk, lt, rtol=1e-12, atol=0) and float((gk - gt).abs().max()) <= 1e-12 * scale
    # the Hessian of the box term alone: (blocks with the box) - (blocks without) against autograd
    h, w = a.shape[2:]
    pattern = blocks_to_csr_pattern(h, w)
    for s in range(2):
        one = tuple(t[s:s + 1] for t in (a,) + prob.op_args())
        bare_one = tuple(t[s:s + 1] for t in (a,) + bare.op_args())
        want = torch.autograd.functional.hessian(
            lambda f: _old_obb_energy(f.view(1, 3, h, w), prob.select(torch.tensor([s])), obb[s:s + 1]).sum(),
            a[s:s + 1].reshape(-1)).numpy()
        twin = (blocks_to_csr(cloth_hessian_twin(*one, False), pattern)
                - blocks_to_csr(cloth_hessian_twin(*bare_one, False), pattern)).toarray()
        ref = max(np.abs(want).max(), 1e-300)
        assert np.abs(twin - want).max() <= 1e-9 * ref
        if _ops.kernels_available():
            for project in (False, True):
                kb = torch.ops.metaphys.cloth_hessian(*one, project)
                tb = cloth_hessian_twin(*one, project)
                assert float((kb - tb).abs().max()) <= 1e-9 * float(tb.abs().max())


def test_the_psd_correction_covers_rotated_boxes():
    """exact Hessian + hessian_psd_correction == the projected Hessian where no spring is compressed:
    the contact curvature of every kind is what the correction removes."""
    prob, _, a, _ = _rotated_box_case(5)
    one = prob.select(torch.tensor([0]))
    fl = one.fields
    fl["rest"] = fl["rest"] * 0.5          # every spring stretched: only contacts have negative curvature
    fl["k_shear"] = fl["k_shear"] * 0      # no shear or bend terms (their projection is elementwise)
    fl["k_bend"] = fl["k_bend"] * 0
    a0 = a[:1]
    exact = one.hessian_matrix(a0).toarray()
    proj = one.hessian_matrix(a0, project=True).toarray()
    corr = one.hessian_psd_correction(a0).toarray()
    free = one.impose(torch.ones_like(a0)).flatten().numpy() != 0    # the correction leaves pins to Newton
    keep = np.ix_(free, free)
    exact, proj, corr = exact[keep], proj[keep], corr[keep]
    assert np.abs(corr).max() > 0 and np.abs(exact - proj).max() > 0
    assert np.abs(exact + corr - proj).max() <= 1e-9 * np.abs(proj).max()


def test_one_list_of_kinds_everywhere():
    """The spec's collider variants, the sim's table and the kernel's codes come from metaphys.colliders."""
    import re
    from metaphys.spec.schema import COLLIDER
    assert list(COLLIDER.variants) == [k.name for k in kinds.KINDS]
    import os
    src = open(os.path.join(os.path.dirname(__file__), "..", "csrc", "cloth", "cloth_math.h"), encoding="utf-8").read()
    enum = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"k(\w+) = (\d+)", src))
    assert enum["ColKind"] == kinds.KIND and enum["ColRotation"] == kinds.ROTATION.start
    assert enum["ColCenter"] == kinds.CENTER.start and enum["ColParams"] == kinds.PARAMS.start
    assert enum["ColFriction"] == kinds.FRICTION and enum["ColliderWidth"] == kinds.WIDTH
    codes = {"Sphere": "sphere", "Box": "box", "MeshPlanes": "mesh"}
    assert {kinds.BY_NAME[v].code for v in codes.values()} == {enum[k] for k in codes}
    assert all(enum[k] == kinds.BY_NAME[v].code for k, v in codes.items()) and enum["NoCollider"] == kinds.NONE
    cases = set(re.findall(r"case k(\w+):", src))
    assert cases == {k for k, v in codes.items() if kinds.BY_NAME[v].kernel}, cases


@pytest.mark.parametrize("name", [k.name for k in kinds.KERNEL_KINDS])
def test_each_kinds_closed_form_distance_hessian_equals_autograds(name):
    kind = kinds.BY_NAME[name]
    assert kind.distance_hessian is not None
    g = torch.Generator().manual_seed(3)
    p = 1.5 * torch.randn(64, 3, generator=g, dtype=torch.float64)   # inside, on faces' regions, edges, corners
    prm = torch.tensor([0.4, 0.7, 0.5, 0.0], dtype=torch.float64).expand(64, 4)
    auto = torch.stack([torch.autograd.functional.hessian(lambda v: kind.distance(v, prm[m]), p[m])
                        for m in range(64)])
    np.testing.assert_allclose(kind.distance_hessian(p, prm).numpy(), auto.numpy(), rtol=1e-9, atol=1e-12)


def test_contact_curvature_closed_form_equals_the_autograd_path(monkeypatch):
    import dataclasses
    from metaphys.physics import cloth as cloth_mod
    n = 12
    x = rest_grid(1, n, n) * (1.0 / (n - 1))
    x = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    table = torch.as_tensor(np.stack([
        kinds.row("sphere", [0.5, 0.5, 0.1], [0.3]),
        kinds.row("box", [0.2, 0.3, -0.05], [0.15, 0.2, 0.1], rotation=rotation_matrix(0.4, -0.6, 0.9).numpy()),
    ]))[None]
    margin, pin_w = torch.tensor([0.2], dtype=torch.float64), torch.zeros(1, 1, n, n, dtype=torch.float64)
    vert, closed = cloth_mod.contact_curvature(x, table, margin, pin_w)
    plain = tuple(dataclasses.replace(k, distance_hessian=None) for k in kinds.KERNEL_KINDS)
    monkeypatch.setattr(kinds, "KERNEL_KINDS", plain)
    vert2, auto = cloth_mod.contact_curvature(x, table, margin, pin_w)
    assert len(vert) > 20 and np.array_equal(vert, vert2)
    np.testing.assert_allclose(closed, auto, rtol=1e-8, atol=1e-12 * np.abs(auto).max())


def test_has_extra_terms_follows_new_and_changed_friction_and_planes():
    """The answer is kept for the same tensors only: a replaced or in-place changed field is asked again."""
    from metaphys.physics.cloth import has_extra_terms
    n, h, w = 1, 4, 5
    friction = torch.zeros(n, 2, h, w, dtype=torch.float64)
    planes = torch.zeros(n, 8, h, w, dtype=torch.float64)
    pairs = torch.zeros(n, 0, 2, dtype=torch.long)
    fields = {"friction": friction, "planes": planes, "self_pairs": pairs}
    assert has_extra_terms(fields) is False
    friction[:, 0, 1, 2] = 0.4                     # in place: same object, new version
    assert has_extra_terms(fields) is True
    friction.zero_()
    assert has_extra_terms(fields) is False
    fields["planes"] = planes.clone()
    fields["planes"][:, 6, 0, 0] = 1.0             # a new tensor with an active plane
    assert has_extra_terms(fields) is True
    fields["planes"] = planes
    assert has_extra_terms(fields) is False
    fields["self_pairs"] = torch.tensor([[[0, 7]]])
    assert has_extra_terms(fields) is True
