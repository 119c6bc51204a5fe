# Raspberry Pi Pico W (RP2040): pins of the documented wiring (docs/firmware.md).
# ADC0..2 = GP26..28; the Pico W has no spare ADC for solar current (reported 0).
import machine
from lunanode.board.hw import HwBoard


class Board(HwBoard):
    name = "rp2"
    PINS = {
        "i2c_id": 0,
        "scl": 5,
        "sda": 4,
        "onewire": 15,
        "rad": 16,
        "bat_v": 26,
        "sol_v": 27,
        "bat_i": 28,
        "sol_i": None,
        "wdt_max_ms": 8388,  # RP2040 watchdog limit
        "uart_id": 0,  # UART link (config "link": "uart"): UART0 on GP0 (TX) / GP1 (RX)
        "uart_tx": 0,
        "uart_rx": 1,
    }
    ADC_VREF_MV = 3300

    def __init__(self, cfg):
        HwBoard.__init__(self, cfg)
        self.t_adc = machine.ADC(4)  # internal temperature sensor

    def cpu_temp(self):
        # RP2040 datasheet 4.9.5: T = 27 - (V - 0.706) / 0.001721
        mv = self.t_adc.read_u16() * 3300 // 65535
        return 2700 - (mv - 706) * 100000 // 1721
