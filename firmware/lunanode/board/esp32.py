# ESP32 DevKitC (ESP32-WROOM-32): pins of the documented wiring (docs/firmware.md).
# ADC1 pins only (ADC2 is unusable while WiFi is on).
import esp32
import machine
from lunanode.board.hw import HwBoard


class Board(HwBoard):
    name = "esp32"
    PINS = {
        "i2c_id": 0,
        "scl": 22,
        "sda": 21,
        "onewire": 4,
        "rad": 27,
        "bat_v": 34,
        "sol_v": 35,
        "bat_i": 32,
        "sol_i": 33,
        "wdt_max_ms": 600000,
        "uart_id": 2,  # UART link (config "link": "uart"): UART2 on GPIO17 (TX) / GPIO16 (RX)
        "uart_tx": 17,
        "uart_rx": 16,
    }
    ADC_VREF_MV = 3300  # ADC.ATTN_11DB: full scale about 3.3 V (uncalibrated)

    def adc(self, pin):
        a = machine.ADC(machine.Pin(pin))
        a.atten(machine.ADC.ATTN_11DB)
        return a

    def cpu_temp(self):
        # classic ESP32: uncalibrated internal sensor in degF
        return (esp32.raw_temperature() - 32) * 500 // 9
