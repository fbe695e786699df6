// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Counter} from "../src/Counter.sol";

/// The cheatcodes the script uses, declared inline (no forge-std).
interface Vm {
    function envBytes32(string calldata name) external view returns (bytes32);
    function envUint(string calldata name) external view returns (uint256);
    function startBroadcast() external;
    function stopBroadcast() external;
}

/// A salted deployment, `new Counter{salt: SALT}()`, which forge sends
/// through the CREATE2 deployer at 0x4e59b44847b379578588920cA78FbF26c0B4956C,
/// then a call on the new contract. SALT and NUMBER come from the
/// environment. Run: forge script script/Deploy.s.sol:Deploy --broadcast ...
contract Deploy {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    address internal constant CREATE2_DEPLOYER = 0x4e59b44847b379578588920cA78FbF26c0B4956C;

    function run() external returns (Counter counter) {
        bytes32 salt = vm.envBytes32("SALT");
        uint256 number = vm.envUint("NUMBER");
        address expected = address(uint160(uint256(keccak256(
            abi.encodePacked(bytes1(0xff), CREATE2_DEPLOYER, salt, keccak256(type(Counter).creationCode))
        ))));
        vm.startBroadcast();
        counter = new Counter{salt: salt}();
        counter.setNumber(number);
        vm.stopBroadcast();
        require(address(counter) == expected, "not at the CREATE2 address");
        require(counter.number() == number, "setNumber did not take");
    }
}
