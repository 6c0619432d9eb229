// fastrnn/detail/team.h - the threads one call of the kernels runs on: a pool of std::threads.
//
//   run_team(n, body);     // body() on the calling thread and on up to n - 1 pooled workers
//   team_id(), team_size() // inside body: this thread's member number in [0, n), and n
//
// The caller never waits for a worker that has not joined: when its own part of body is done it closes
// the call and waits only for the workers inside it. The kernels share their work out in claimed chunks
// (Phases, sequence.h), so whoever is present does all of it, and a worker that joins late catches up
// and helps. Why not an OpenMP parallel region: its join waits for every member, and an idle core of a
// virtual machine took 2-8 ms to run a woken thread (measured on the 2-core VM this was built on: a call
// 30-100 ms after the last one cost 5.7-7.6 ms instead of 0.14 ms, T = 1, H = 256, while ONNX Runtime,
// whose pool does the same as this one, took 0.4 ms); here such a call runs on the caller alone.
// Workers spin for 5 ms after a call (FASTRNN_SPIN_US overrides it; back-to-back calls and a stream's
// short gaps find them awake, like OpenMP's default spin), then sleep on a condition variable. One call
// uses the pool at a time; a call from another thread meanwhile runs on its own thread alone (no
// oversubscription). After fork() the child starts a pool of its own.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(_WIN32)
#include <process.h>
#else
#include <sched.h>
#include <unistd.h>
#endif

namespace fastrnn {
namespace detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Wait until done(): spin briefly, then yield (the thread waited for may need this core).
template <class Done> void wait_until(Done&& done) {
    for (int spins = 0; !done();)
        if (++spins < 2000) cpu_relax();
        else std::this_thread::yield();
}

struct TeamSlot {
    int member = 0, size = 1;
};
inline TeamSlot& team_slot() {
    thread_local TeamSlot slot;
    return slot;
}
inline int team_id() { return team_slot().member; }
inline int team_size() { return team_slot().size; }

// Threads a call uses by default: the CPUs this process may run on.
inline int default_threads() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
#endif
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
}

inline long process_id() {
#if defined(_WIN32)
    return _getpid();
#else
    return static_cast<long>(getpid());
#endif
}

class Team {
public:
    // how long a worker spins for the next call before it sleeps
    static std::chrono::microseconds spin_time() {
        static const std::chrono::microseconds spin{[] {
            const char* text = std::getenv("FASTRNN_SPIN_US");
            return text && *text ? std::max(0L, std::atol(text)) : 5000L;
        }()};
        return spin;
    }

    // The process's pool (made on first use; a new one in a forked child, the parent's left unused).
    static Team& get() {
        static std::atomic<Team*> current{nullptr};
        const long pid = process_id();
        Team* team = current.load(std::memory_order_acquire);
        while (team == nullptr || team->pid_ != pid) {
            Team* made = new Team(pid);     // no threads yet: they start at the first call that needs them
            if (current.compare_exchange_strong(team, made, std::memory_order_acq_rel)) return *made;
            delete made;                    // another thread made it first (team now holds its pool)
        }
        return *team;
    }

    template <class Body> void run(int n, Body& body) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (n <= 1 || !busy.owns_lock()) {
            as_member(0, 1, body);
            return;
        }
        try {
            while (static_cast<int>(workers_.size()) < n - 1) workers_.emplace_back([this] { work(); });
        } catch (const std::system_error&) {
            // no more threads to be had (a process limit): the call runs on those there are
        }
        job_ = &call<Body>;
        context_ = &body;
        size_ = n;
        next_member_.store(1, std::memory_order_relaxed);
        open_.store(true, std::memory_order_seq_cst);       // the job's fields are visible to whoever sees it open
        {
            std::lock_guard<std::mutex> lock(wake_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_cv_.notify_all();
        Closer closer{*this};       // also if body throws: no worker may still run it once this returns
        as_member(0, n, body);
    }

private:
    explicit Team(long pid) : pid_(pid) {}
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;
    ~Team() = default;      // pools are never destroyed (their threads may be asleep at exit)

    template <class Body> static void call(void* context, int member, int size) {
        as_member(member, size, *static_cast<Body*>(context));
    }

    // Close the job: a worker that has not joined yet will find it closed; wait for those inside it
    // (seq_cst on both sides: either this load sees a worker's increment, or that worker sees closed).
    struct Closer {
        Team& team;
        ~Closer() {
            team.open_.store(false, std::memory_order_seq_cst);
            wait_until([this] { return team.active_.load(std::memory_order_seq_cst) == 0; });
        }
    };

    template <class Body> static void as_member(int member, int size, Body& body) {
        struct Restore {
            TeamSlot saved;
            ~Restore() { team_slot() = saved; }
        } restore{team_slot()};
        team_slot() = {member, size};
        body();
    }

    void work() {
        unsigned seen = generation_.load(std::memory_order_acquire);
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + spin_time();
            for (int spins = 0; generation_.load(std::memory_order_acquire) == seen; ++spins) {
                if ((spins & 255) == 255 && std::chrono::steady_clock::now() > until) {
                    std::unique_lock<std::mutex> lock(wake_);
                    wake_cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
                    break;
                }
                cpu_relax();
            }
            seen = generation_.load(std::memory_order_acquire);
            active_.fetch_add(1, std::memory_order_seq_cst);
            if (open_.load(std::memory_order_seq_cst)) {
                const int member = next_member_.fetch_add(1, std::memory_order_relaxed);
                if (member < size_) job_(context_, member, size_);
            }
            active_.fetch_sub(1, std::memory_order_release);
        }
    }

    const long pid_;
    std::mutex busy_;                   // held by the call using the pool
    std::vector<std::thread> workers_;  // grown under busy_, never shrunk
    void (*job_)(void*, int, int) = nullptr;
    void* context_ = nullptr;
    int size_ = 1;
    std::atomic<int> next_member_{1};
    std::atomic<bool> open_{false};
    std::atomic<int> active_{0};
    std::atomic<unsigned> generation_{0};
    std::mutex wake_;
    std::condition_variable wake_cv_;
};

// body() on a team of n threads (the caller and up to n - 1 workers, see above).
template <class Body> void run_team(int n, Body&& body) { Team::get().run(n, body); }

}  // namespace detail
}  // namespace fastrnn
