// fastrnn._ext: the thin pybind11 layer over fastrnn/sequence.h (the "cpp" backend, fastrnn/backends/cpp.py).
//
//   forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, save, threads, w_hr=None, packed=None,
//           packed_ready=False) -> (y, h_n, c_n, tape)
//   packed_forward_size(cell, x, w_ih, w_hh, w_hr=None) -> the length of the 1-D array of x's dtype that
//       forward's `packed` takes (fastrnn::PackedForward: filled when not packed_ready, read when it is)
//   backward(cell, x, w_ih, w_hh, b_ih, b_hh, lengths, tape, dy, dh_n, dc_n, threads, w_hr=None)
//       -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
//   cell: 0 LSTM, 1 GRU (linear_before_reset), 2 GRU (Cho), 3 RNN tanh, 4 RNN relu (fastrnn::Cell);
//   tape: (h, c, gates, ghn, m), entries None where the cell has none; w_hr (P, H): an LSTM with
//   projections (then h, y and their gradients have P columns). Shapes: sequence.h.
// It checks every array (NumPy, C-contiguous, x's dtype, float32 or float64, the expected shape;
// TypeError or ValueError naming the argument), allocates the outputs, releases the GIL and calls
// the templates. Arguments that may be absent are None.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <fastrnn/sequence.h>

#include <algorithm>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

std::string shape_text(const std::vector<py::ssize_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// The array behind `obj`, checked: a C-contiguous NumPy array of `dtype` and `shape`.
py::array checked(const py::object& obj, const char* name, const py::dtype& dtype, const std::vector<py::ssize_t>& shape) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a NumPy array, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (!arr.dtype().is(dtype) && !arr.dtype().equal(dtype))
        throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(dtype)) + ", got " +
                             std::string(py::str(arr.dtype())));
    std::vector<py::ssize_t> got(arr.shape(), arr.shape() + arr.ndim());
    if (got != shape)
        throw py::value_error(std::string(name) + " must have shape " + shape_text(shape) + ", got " + shape_text(got));
    if (!(arr.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    return arr;
}

template <class Real> const Real* optional_data(const py::object& obj, const char* name, const std::vector<py::ssize_t>& shape) {
    if (obj.is_none()) return nullptr;
    return static_cast<const Real*>(checked(obj, name, py::dtype::of<Real>(), shape).data());
}

fastrnn::Cell cell_of(int code) {
    if (code < 0 || code > 4) throw py::value_error("cell must be 0 (LSTM), 1 (GRU), 2 (GRU Cho), 3 (RNN tanh) or 4 (RNN relu)");
    return static_cast<fastrnn::Cell>(code);
}

// The problem's dimensions from x (T, B, I), w_hh (G*H, H) and w_hr (P, H) if given, every weight checked.
template <class Real> fastrnn::Problem<Real> problem(fastrnn::Cell cell, const py::object& x, const py::object& w_ih,
                                                      const py::object& w_hh, const py::object& b_ih,
                                                      const py::object& b_hh, const py::object& lengths,
                                                      const py::object& w_hr) {
    const py::dtype dt = py::dtype::of<Real>();
    if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a NumPy array");
    py::array xa = py::reinterpret_borrow<py::array>(x);
    if (xa.ndim() != 3) throw py::value_error("x must have 3 dimensions (T, B, I), got " + std::to_string(xa.ndim()));
    if (!py::isinstance<py::array>(w_hh)) throw py::type_error("w_hh must be a NumPy array");
    py::array wa = py::reinterpret_borrow<py::array>(w_hh);
    if (wa.ndim() != 2) throw py::value_error("w_hh must have 2 dimensions (G*H, H)");
    py::ssize_t H = wa.shape(1), P = H;
    if (!w_hr.is_none()) {
        if (cell != fastrnn::Cell::lstm) throw py::value_error("w_hr (projections) is for the LSTM only");
        if (!py::isinstance<py::array>(w_hr)) throw py::type_error("w_hr must be a NumPy array");
        py::array ra = py::reinterpret_borrow<py::array>(w_hr);
        if (ra.ndim() != 2) throw py::value_error("w_hr must have 2 dimensions (P, H)");
        P = ra.shape(0);
        H = ra.shape(1);
    }
    const py::ssize_t T = xa.shape(0), B = xa.shape(1), I = xa.shape(2), GH = fastrnn::num_gates(cell) * H;
    if (T < 1 || B < 1 || I < 1 || H < 1 || P < 1) throw py::value_error("T, B, I, H and P must all be >= 1");
    fastrnn::Problem<Real> p{cell, T, B, I, H,
                             static_cast<const Real*>(checked(x, "x", dt, {T, B, I}).data()),
                             static_cast<const Real*>(checked(w_ih, "w_ih", dt, {GH, I}).data()),
                             static_cast<const Real*>(checked(w_hh, "w_hh", dt, {GH, P}).data()),
                             optional_data<Real>(b_ih, "b_ih", {GH}), optional_data<Real>(b_hh, "b_hh", {GH}), nullptr,
                             optional_data<Real>(w_hr, "w_hr", {P, H}), w_hr.is_none() ? 0 : P};
    if (!lengths.is_none())
        p.lengths = static_cast<const std::int64_t*>(checked(lengths, "lengths", py::dtype::of<std::int64_t>(), {B}).data());
    return p;
}

// Where the results' arrays come from: `empty(shape, dtype)` for those of at least `min_bytes` when the
// caller gives one (fastrnn's pool of reused buffers, _arrays.pooled_empty: fresh pages of megabytes
// cost a fault each on first touch, every call), else new NumPy arrays.
struct Outputs {
    py::object empty;
    py::ssize_t min_bytes;

    // A new array of `shape`, its data pointer stored in `ptr`.
    template <class Real> py::object operator()(std::vector<py::ssize_t> shape, Real*& ptr) const {
        py::ssize_t bytes = sizeof(Real);
        for (py::ssize_t n : shape) bytes *= n;
        if (empty.is_none() || bytes < min_bytes) {
            py::array_t<Real> a(shape);
            ptr = a.mutable_data();
            return std::move(a);
        }
        py::tuple dims(shape.size());
        for (std::size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
        py::object made = empty(dims, py::dtype::of<Real>());
        if (!py::isinstance<py::array_t<Real, py::array::c_style>>(made))
            throw py::type_error("empty() must return C-contiguous arrays of the dtype asked for");
        py::array a = py::reinterpret_borrow<py::array>(made);
        if (a.ndim() != static_cast<py::ssize_t>(shape.size()) || !std::equal(shape.begin(), shape.end(), a.shape())
            || !a.writeable())
            throw py::type_error("empty() must return writeable arrays of the shape asked for");
        ptr = static_cast<Real*>(a.mutable_data());
        return made;
    }
};

template <class Real>
py::tuple forward_impl(fastrnn::Cell cell, const py::object& x, const py::object& w_ih, const py::object& w_hh,
                       const py::object& b_ih, const py::object& b_hh, const py::object& h0, const py::object& c0,
                       const py::object& lengths, bool save, int threads, const py::object& w_hr,
                       const py::object& packed, bool packed_ready, const Outputs& out) {
    auto p = problem<Real>(cell, x, w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
    fastrnn::PackedForward<Real> pk;
    if (!packed.is_none()) {
        py::array buf = checked(packed, "packed", py::dtype::of<Real>(), {fastrnn::packed_forward_size(p)});
        if (!buf.writeable()) throw py::value_error("packed must be writeable");
        pk = {static_cast<Real*>(buf.mutable_data()), packed_ready};
    }
    const py::ssize_t T = p.T, B = p.B, H = p.H, P = fastrnn::state_size(p), G = fastrnn::num_gates(cell);
    const bool lstm = cell == fastrnn::Cell::lstm, gru = cell == fastrnn::Cell::gru;
    const Real* h0p = optional_data<Real>(h0, "h0", {B, P});
    const Real* c0p = lstm ? optional_data<Real>(c0, "c0", {B, H}) : nullptr;
    Real *yp, *hnp, *cnp = nullptr;
    fastrnn::Tape<Real> tape{nullptr, nullptr, nullptr, nullptr};
    py::object y = out({T, B, P}, yp), h_n = out({B, P}, hnp);
    py::object c_n = py::none(), th = py::none(), tc = py::none(), tg = py::none(), tghn = py::none();
    py::object tm = py::none();
    if (lstm) c_n = out({B, H}, cnp);
    if (save) {
        th = out({T + 1, B, P}, tape.h);
        tg = out({T, B, G * H}, tape.gates);
        if (lstm) tc = out({T + 1, B, H}, tape.c);
        if (gru) tghn = out({T, B, H}, tape.ghn);
        if (p.w_hr) tm = out({T, B, H}, tape.m);
    }
    {
        py::gil_scoped_release release;
        fastrnn::forward(p, h0p, c0p, yp, hnp, cnp, save ? &tape : nullptr, threads, pk);
    }
    py::object saved = save ? py::object(py::make_tuple(th, tc, tg, tghn, tm)) : py::object(py::none());
    return py::make_tuple(y, h_n, c_n, saved);
}

template <class Real>
py::tuple backward_impl(fastrnn::Cell cell, const py::object& x, const py::object& w_ih, const py::object& w_hh,
                        const py::object& b_ih, const py::object& b_hh, const py::object& lengths,
                        const py::tuple& saved, const py::object& dy, const py::object& dh_n, const py::object& dc_n,
                        int threads, const py::object& w_hr, const Outputs& out) {
    auto p = problem<Real>(cell, x, w_ih, w_hh, b_ih, b_hh, lengths, w_hr);
    const py::ssize_t T = p.T, B = p.B, I = p.I, H = p.H, P = fastrnn::state_size(p), GH = fastrnn::num_gates(cell) * H;
    const bool lstm = cell == fastrnn::Cell::lstm, gru = cell == fastrnn::Cell::gru;
    if (saved.size() != 5) throw py::value_error("tape must be the 5-tuple (h, c, gates, ghn, m) that forward returned");
    fastrnn::Tape<Real> tape{const_cast<Real*>(optional_data<Real>(saved[0], "tape h", {T + 1, B, P})),
                             const_cast<Real*>(optional_data<Real>(saved[1], "tape c", {T + 1, B, H})),
                             const_cast<Real*>(optional_data<Real>(saved[2], "tape gates", {T, B, GH})),
                             const_cast<Real*>(optional_data<Real>(saved[3], "tape ghn", {T, B, H})),
                             const_cast<Real*>(optional_data<Real>(saved[4], "tape m", {T, B, H}))};
    if (!tape.h || !tape.gates || (lstm && !tape.c) || (gru && !tape.ghn) || (p.w_hr && !tape.m))
        throw py::value_error("tape lacks an array this cell needs (was it recorded with save=True for this cell?)");
    const Real* dyp = optional_data<Real>(dy, "dy", {T, B, P});
    const Real* dhp = optional_data<Real>(dh_n, "dh_n", {B, P});
    const Real* dcp = lstm ? optional_data<Real>(dc_n, "dc_n", {B, H}) : nullptr;
    fastrnn::Grads<Real> g{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    py::object dx = out({T, B, I}, g.dx), dh0 = out({B, P}, g.dh0);
    py::object dw_ih = out({GH, I}, g.dw_ih), dw_hh = out({GH, P}, g.dw_hh);
    py::object dc0 = py::none(), db_ih = py::none(), db_hh = py::none(), dw_hr = py::none();
    if (lstm) dc0 = out({B, H}, g.dc0);
    if (p.b_ih) db_ih = out({GH}, g.db_ih);
    if (p.b_hh) db_hh = out({GH}, g.db_hh);
    if (p.w_hr) dw_hr = out({P, H}, g.dw_hr);
    {
        py::gil_scoped_release release;
        fastrnn::backward(p, tape, dyp, dhp, dcp, g, threads);
    }
    return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr);
}

// float32 or float64, from x; anything else is refused here, before any pointer is taken.
bool is_double(const py::object& x) {
    if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a NumPy array");
    py::dtype dt = py::reinterpret_borrow<py::array>(x).dtype();
    if (dt.equal(py::dtype::of<double>())) return true;
    if (dt.equal(py::dtype::of<float>())) return false;
    throw py::type_error("x must have dtype float32 or float64, got " + std::string(py::str(dt)));
}

}  // namespace

PYBIND11_MODULE(_ext, m) {
    m.doc() = "fastrnn's C++ sequence kernels (fastrnn/sequence.h): the \"cpp\" backend";
    m.def("forward",
          [](int cell, py::object x, py::object w_ih, py::object w_hh, py::object b_ih, py::object b_hh, py::object h0,
             py::object c0, py::object lengths, bool save, int threads, py::object w_hr, py::object packed,
             bool packed_ready, py::object empty, py::ssize_t empty_min_bytes) {
              auto c = cell_of(cell);
              const Outputs out{empty, empty_min_bytes};
              return is_double(x) ? forward_impl<double>(c, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, save, threads,
                                                         w_hr, packed, packed_ready, out)
                                  : forward_impl<float>(c, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, save, threads,
                                                        w_hr, packed, packed_ready, out);
          },
          py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
          py::arg("h0"), py::arg("c0"), py::arg("lengths"), py::arg("save"), py::arg("threads"),
          py::arg("w_hr") = py::none(), py::arg("packed") = py::none(), py::arg("packed_ready") = false,
          py::arg("empty") = py::none(), py::arg("empty_min_bytes") = 0);
    m.def("packed_forward_size",
          [](int cell, py::object x, py::object w_ih, py::object w_hh, py::object w_hr) {
              auto c = cell_of(cell);
              const py::none none;
              return is_double(x) ? fastrnn::packed_forward_size(problem<double>(c, x, w_ih, w_hh, none, none, none, w_hr))
                                  : fastrnn::packed_forward_size(problem<float>(c, x, w_ih, w_hh, none, none, none, w_hr));
          },
          py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("w_hr") = py::none());
    m.def("backward",
          [](int cell, py::object x, py::object w_ih, py::object w_hh, py::object b_ih, py::object b_hh,
             py::object lengths, py::tuple saved, py::object dy, py::object dh_n, py::object dc_n, int threads,
             py::object w_hr, py::object empty, py::ssize_t empty_min_bytes) {
              auto c = cell_of(cell);
              const Outputs out{empty, empty_min_bytes};
              return is_double(x) ? backward_impl<double>(c, x, w_ih, w_hh, b_ih, b_hh, lengths, saved, dy, dh_n, dc_n,
                                                          threads, w_hr, out)
                                  : backward_impl<float>(c, x, w_ih, w_hh, b_ih, b_hh, lengths, saved, dy, dh_n, dc_n,
                                                         threads, w_hr, out);
          },
          py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
          py::arg("lengths"), py::arg("tape"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("threads"),
          py::arg("w_hr") = py::none(), py::arg("empty") = py::none(), py::arg("empty_min_bytes") = 0);
    m.def("isa", [] { return std::string(fastrnn::isa()); },
          "The instruction set the kernels use on this CPU: avx512, avx2 or portable");
}
