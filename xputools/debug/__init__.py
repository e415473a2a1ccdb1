"""The debugger (`xpu debug`): not built yet; the device model already offers what it will use
(Machine.step, snapshot/restore, observers, hang reports)."""
